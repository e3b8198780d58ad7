"""Glow: the Ember+ data model on BER, the subset Companion's provider uses.

A provider serves a tree. Each element has a number among its siblings, so a path
such as ``0.3.2.0.1`` names one. Nodes have an identifier and a description;
parameters carry a value, its type and an access right. A consumer asks with
commands: GetDirectory (32) on an element returns it with its children (one level,
no grandchildren) and, in the providers built on the common TypeScript library (as
Companion's is), subscribes the connection to that path: later changes of the
element's parameters are pushed. Subscribe (30) and Unsubscribe (31) exist too.

On the wire (tag numbers as in the Glow DTD and its reference implementations)::

    Root                 [APPLICATION 0]  holding one of:
    RootElementCollection[APPLICATION 11] SEQUENCE OF [0] RootElement
    ElementCollection    [APPLICATION 4]  SEQUENCE OF [0] Element
    Parameter            [APPLICATION 1]  { [0] number, [1] contents, [2] children }
    Command              [APPLICATION 2]  { [0] number, [1] dirFieldMask }
    Node                 [APPLICATION 3]  { [0] number, [1] contents, [2] children }
    QualifiedParameter   [APPLICATION 9]  { [0] path RELATIVE-OID, [1], [2] }
    QualifiedNode        [APPLICATION 10] { [0] path RELATIVE-OID, [1], [2] }
    NodeContents         SET { [0] identifier, [1] description, [2] isRoot, [3] isOnline }
    ParameterContents    SET { [0] identifier, [1] description, [2] value, [3] minimum,
                               [4] maximum, [5] access, [6] format, [7] enumeration,
                               [8] factor, [9] isOnline, [10] formula, [11] step,
                               [12] default, [13] type, [14] streamIdentifier, ... }

Every context tag is explicit (it wraps one universal element). Numbered elements
(inside a collection) and qualified ones (at the root, with their full path) decode
to the same classes here, each with its full :attr:`Node.path` (a numbered element's
path is its parent's plus its number) and :attr:`Node.qualified`. Other root kinds
(streams, invocation results) and other element kinds (matrices, functions,
templates) are skipped. Decoding raises :class:`~.ber.BerError` and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from . import ber
from .ber import BerError, Tlv, application, context

ROOT = application(0)
PARAMETER = application(1)
COMMAND = application(2)
NODE = application(3)
ELEMENT_COLLECTION = application(4)
STREAM_COLLECTION = application(6)
QUALIFIED_PARAMETER = application(9)
QUALIFIED_NODE = application(10)
ROOT_ELEMENT_COLLECTION = application(11)
INVOCATION_RESULT = application(23)

Value = int | float | str | bool | bytes | None


class ParameterType(IntEnum):
    NULL = 0
    INTEGER = 1
    REAL = 2
    STRING = 3
    BOOLEAN = 4
    TRIGGER = 5
    ENUM = 6
    OCTETS = 7


class Access(IntEnum):
    NONE = 0
    READ = 1
    WRITE = 2
    READ_WRITE = 3


class CommandType(IntEnum):
    SUBSCRIBE = 30
    UNSUBSCRIBE = 31
    GET_DIRECTORY = 32
    INVOKE = 33


class FieldFlags(IntEnum):
    SPARSE = -2
    ALL = -1
    DEFAULT = 0
    IDENTIFIER = 1
    DESCRIPTION = 2
    TREE = 3
    VALUE = 4
    CONNECTIONS = 5


class GlowError(BerError):
    """Well-formed BER that is not the Glow this module understands."""


@dataclass(slots=True)
class Command:
    number: int
    dir_field_mask: int | None = None


@dataclass(slots=True)
class NodeContents:
    identifier: str | None = None
    description: str | None = None
    is_root: bool | None = None
    is_online: bool | None = None


@dataclass(slots=True)
class ParameterContents:
    identifier: str | None = None
    description: str | None = None
    value: Value = None
    has_value: bool = False  # a NULL value and no value differ
    minimum: Value = None
    maximum: Value = None
    access: int | None = None
    format: str | None = None
    enumeration: str | None = None
    factor: int | None = None
    is_online: bool | None = None
    formula: str | None = None
    step: int | None = None
    default: Value = None
    type: int | None = None
    stream_identifier: int | None = None


@dataclass(slots=True)
class Node:
    path: tuple[int, ...]
    contents: NodeContents | None = None
    children: list[Element] | None = None  # None: no children field at all
    qualified: bool = False


@dataclass(slots=True)
class Parameter:
    path: tuple[int, ...]
    contents: ParameterContents | None = None
    children: list[Element] | None = None
    qualified: bool = False


Element = Node | Parameter | Command


@dataclass(slots=True)
class Root:
    """A decoded message: its root elements (empty for other root kinds)."""

    elements: list[Element] = field(default_factory=list)
    skipped: int = 0  # elements of kinds not modelled here


# --- values -----------------------------------------------------------------------


def encode_value(value: Value) -> Tlv:
    if value is None:
        return ber.null()
    if isinstance(value, bool):
        return ber.boolean(value)
    if isinstance(value, int):
        return ber.integer(value)
    if isinstance(value, float):
        return ber.real(value)
    if isinstance(value, str):
        return ber.utf8(value)
    return ber.octets(value)


def decode_value(tlv: Tlv) -> Value:
    tag = tlv.tag
    if tag == ber.INTEGER:
        return ber.decode_integer(tlv.content)
    if tag == ber.UTF8_STRING:
        return ber.decode_utf8(tlv.content)
    if tag == ber.BOOLEAN:
        return ber.decode_boolean(tlv.content)
    if tag == ber.REAL:
        return ber.decode_real(tlv.content)
    if tag == ber.OCTET_STRING:
        return tlv.content
    if tag == ber.NULL:
        if tlv.content:
            raise GlowError("NULL with content")
        return None
    if tag == ber.RELATIVE_OID:
        return ".".join(str(n) for n in ber.decode_relative_oid(tlv.content))
    raise GlowError(f"unsupported value type {tag}")


# --- encoding ---------------------------------------------------------------------


def _field(number: int, inner: Tlv) -> Tlv:
    return ber.constructed(context(number), [inner])


def _node_contents(c: NodeContents) -> Tlv:
    items: list[Tlv] = []
    if c.identifier is not None:
        items.append(_field(0, ber.utf8(c.identifier)))
    if c.description is not None:
        items.append(_field(1, ber.utf8(c.description)))
    if c.is_root is not None:
        items.append(_field(2, ber.boolean(c.is_root)))
    if c.is_online is not None:
        items.append(_field(3, ber.boolean(c.is_online)))
    return ber.constructed(ber.SET, items)


def _parameter_contents(c: ParameterContents) -> Tlv:
    items: list[Tlv] = []

    def text(n: int, v: str | None) -> None:
        if v is not None:
            items.append(_field(n, ber.utf8(v)))

    def num(n: int, v: int | None) -> None:
        if v is not None:
            items.append(_field(n, ber.integer(int(v))))

    text(0, c.identifier)
    text(1, c.description)
    if c.has_value or c.value is not None:
        items.append(_field(2, encode_value(c.value)))
    if c.minimum is not None:
        items.append(_field(3, encode_value(c.minimum)))
    if c.maximum is not None:
        items.append(_field(4, encode_value(c.maximum)))
    num(5, c.access)
    text(6, c.format)
    text(7, c.enumeration)
    num(8, c.factor)
    if c.is_online is not None:
        items.append(_field(9, ber.boolean(c.is_online)))
    text(10, c.formula)
    num(11, c.step)
    if c.default is not None:
        items.append(_field(12, encode_value(c.default)))
    num(13, c.type)
    num(14, c.stream_identifier)
    return ber.constructed(ber.SET, items)


def _command(c: Command) -> Tlv:
    items = [_field(0, ber.integer(c.number))]
    if c.dir_field_mask is not None:
        items.append(_field(1, ber.integer(c.dir_field_mask)))
    return ber.constructed(COMMAND, items)


def _element(el: Element, at_root: bool) -> Tlv:
    if isinstance(el, Command):
        return _command(el)
    if not el.path:
        raise GlowError("an element needs a path")
    qualified = el.qualified and at_root
    if isinstance(el, Node):
        tag = QUALIFIED_NODE if qualified else NODE
        contents = _node_contents(el.contents) if el.contents is not None else None
    else:
        tag = QUALIFIED_PARAMETER if qualified else PARAMETER
        contents = _parameter_contents(el.contents) if el.contents is not None else None
    head = ber.relative_oid(el.path) if qualified else ber.integer(el.path[-1])
    items = [_field(0, head)]
    if contents is not None:
        items.append(_field(1, contents))
    if el.children is not None:
        coll = ber.constructed(
            ELEMENT_COLLECTION, [_field(0, _element(c, False)) for c in el.children]
        )
        items.append(_field(2, coll))
    return ber.constructed(tag, items)


def encode_root(elements: list[Element]) -> bytes:
    """A Root holding a RootElementCollection of ``elements``."""
    items = [_field(0, _element(e, True)) for e in elements]
    coll = ber.constructed(ROOT_ELEMENT_COLLECTION, items)
    return ber.encode(ber.constructed(ROOT, [coll]))


# --- decoding ---------------------------------------------------------------------


def _fields(tlv: Tlv) -> dict[int, Tlv]:
    """The explicit context fields of a SEQUENCE/SET-like element, by number."""
    out: dict[int, Tlv] = {}
    for c in tlv.children:
        if c.tag.cls != ber.TagClass.CONTEXT:
            raise GlowError(f"unexpected {c.tag} in {tlv.tag}")
        if c.tag.number in out:
            raise GlowError(f"duplicate field [{c.tag.number}] in {tlv.tag}")
        out[c.tag.number] = ber.single(c)
    return out


def _text(f: dict[int, Tlv], n: int) -> str | None:
    t = f.get(n)
    if t is None:
        return None
    return ber.decode_utf8(ber.expect(t, ber.UTF8_STRING).content)


def _int(f: dict[int, Tlv], n: int) -> int | None:
    t = f.get(n)
    if t is None:
        return None
    return ber.decode_integer(ber.expect(t, ber.INTEGER).content)


def _bool(f: dict[int, Tlv], n: int) -> bool | None:
    t = f.get(n)
    if t is None:
        return None
    return ber.decode_boolean(ber.expect(t, ber.BOOLEAN).content)


def _decode_node_contents(tlv: Tlv) -> NodeContents:
    f = _fields(ber.expect(tlv, ber.SET))
    return NodeContents(_text(f, 0), _text(f, 1), _bool(f, 2), _bool(f, 3))


def _decode_parameter_contents(tlv: Tlv) -> ParameterContents:
    f = _fields(ber.expect(tlv, ber.SET))
    c = ParameterContents(identifier=_text(f, 0), description=_text(f, 1))
    if 2 in f:
        c.value = decode_value(f[2])
        c.has_value = True
    if 3 in f:
        c.minimum = decode_value(f[3])
    if 4 in f:
        c.maximum = decode_value(f[4])
    c.access = _int(f, 5)
    c.format = _text(f, 6)
    c.enumeration = _text(f, 7)
    c.factor = _int(f, 8)
    c.is_online = _bool(f, 9)
    c.formula = _text(f, 10)
    c.step = _int(f, 11)
    if 12 in f:
        c.default = decode_value(f[12])
    c.type = _int(f, 13)
    c.stream_identifier = _int(f, 14)
    return c


class _Reader:
    __slots__ = ("skipped",)

    def __init__(self) -> None:
        self.skipped = 0

    def element(self, tlv: Tlv, parent: tuple[int, ...] | None) -> Element | None:
        tag = tlv.tag
        if tag == COMMAND:
            f = _fields(tlv)
            number = _int(f, 0)
            if number is None:
                raise GlowError("command without a number")
            return Command(number, _int(f, 1))
        qualified = tag in (QUALIFIED_NODE, QUALIFIED_PARAMETER)
        if qualified and parent is not None:
            raise GlowError("qualified element inside a collection")
        if tag not in (NODE, PARAMETER, QUALIFIED_NODE, QUALIFIED_PARAMETER):
            self.skipped += 1
            return None
        f = _fields(tlv)
        head = f.get(0)
        if head is None:
            raise GlowError(f"{tag} without number/path")
        if qualified:
            path = ber.decode_relative_oid(ber.expect(head, ber.RELATIVE_OID).content)
            if not path:
                raise GlowError("empty path")
        else:
            number = ber.decode_integer(ber.expect(head, ber.INTEGER).content)
            if not 0 <= number <= ber.MAX_OID_COMPONENT:
                raise GlowError("element number out of range")
            path = (*(parent or ()), number)
        children: list[Element] | None = None
        if 2 in f:
            children = []
            for item in ber.expect(f[2], ELEMENT_COLLECTION).children:
                if item.tag != context(0):
                    raise GlowError(f"unexpected {item.tag} in a collection")
                child = self.element(ber.single(item), path)
                if child is not None:
                    children.append(child)
        if tag in (NODE, QUALIFIED_NODE):
            nc = _decode_node_contents(f[1]) if 1 in f else None
            return Node(path, nc, children, qualified)
        pc = _decode_parameter_contents(f[1]) if 1 in f else None
        return Parameter(path, pc, children, qualified)


def decode_root(payload: bytes, limits: ber.Limits = ber.DEFAULT_LIMITS) -> Root:
    """One Glow message (the payload of an S101 message)."""
    root = ber.expect(ber.decode(payload, limits), ROOT)
    if len(root.children) != 1:
        raise GlowError("a Root holds exactly one element")
    body = root.children[0]
    out = Root()
    if body.tag != ROOT_ELEMENT_COLLECTION:
        if body.tag in (STREAM_COLLECTION, INVOCATION_RESULT):
            out.skipped = 1
            return out
        raise GlowError(f"unknown root {body.tag}")
    reader = _Reader()
    for item in body.children:
        if item.tag != context(0):
            raise GlowError(f"unexpected {item.tag} in the root collection")
        el = reader.element(ber.single(item), None)
        if el is not None:
            out.elements.append(el)
    out.skipped = reader.skipped
    return out


def walk(elements: list[Element]) -> list[Node | Parameter]:
    """Every node and parameter, depth first (commands left out)."""
    out: list[Node | Parameter] = []
    stack = list(reversed(elements))
    while stack:
        el = stack.pop()
        if isinstance(el, Command):
            continue
        out.append(el)
        if el.children:
            stack.extend(reversed(el.children))
    return out


# --- requests ---------------------------------------------------------------------


def command_at(path: tuple[int, ...], number: int, dir_field_mask: int | None = None) -> bytes:
    """A command on the element at ``path`` (the root for an empty path)."""
    cmd = Command(number, dir_field_mask)
    if not path:
        return encode_root([cmd])
    return encode_root([Node(path, None, [cmd], qualified=True)])


def get_directory(path: tuple[int, ...] = ()) -> bytes:
    return command_at(path, CommandType.GET_DIRECTORY)


def set_value(path: tuple[int, ...], value: Value) -> bytes:
    """A QualifiedParameter carrying only the new value."""
    contents = ParameterContents(value=value, has_value=True)
    return encode_root([Parameter(path, contents, qualified=True)])
