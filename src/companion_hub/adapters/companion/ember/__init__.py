"""Ember+ (the Lawo control protocol) as Companion's provider speaks it, sans I/O.

Three layers, each pure: :mod:`.ber` (ASN.1 BER tag-length-value encoding and the
universal types Ember+ uses), :mod:`.s101` (the framing on the TCP stream: byte
stuffing, CRC, keep-alives, multi-packet messages) and :mod:`.glow` (the Glow DTD: the
tree of nodes and parameters, and commands). :mod:`.consumer` is a client state
machine on top: it walks Companion's tree to its variables and follows their values.
"""
