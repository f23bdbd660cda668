#!/usr/bin/python3
"""session-vector: tests/vectors/session-v2.bin re-made by dissononce, an
independent Noise implementation (Debian's python3-dissononce), from the
inputs of tests/vectors/session-v2.txt: the HandshakeInit (e, the
encrypted TAI64N timestamp, mac1), the HandshakeResp and one Transport
each way must be the same bytes nkp wrote. Exit 77 (skipped) without
dissononce."""
import hashlib
import struct
import sys

try:
    from dissononce.cipher.chachapoly import ChaChaPolyCipher
    from dissononce.dh.x25519.private import PrivateKey
    from dissononce.dh.x25519.x25519 import X25519DH
    from dissononce.hash.blake2b import Blake2bHash
    from dissononce.processing.handshakepatterns.interactive.KK import KKHandshakePattern
    from dissononce.processing.impl.cipherstate import CipherState
    from dissononce.processing.impl.handshakestate import HandshakeState
    from dissononce.processing.impl.symmetricstate import SymmetricState
except ImportError as e:
    print("session-vector: dissononce is not installed (%s): skipped" % e, file=sys.stderr)
    sys.exit(77)

PROLOGUE = b"nkp-wire-v1"
WALL_NS = 1800000000123456789
INI_INDEX, RSP_INDEX = 0x01020304, 0xA1B2C3D4
REQUEST = b"nkp session-v2 known answer: push generation 42"
REPLY = b"applied generation 42"


def seq(first):
    return bytes((first + i) & 0xFF for i in range(32))


def keypair(secret):
    return X25519DH().generate_keypair(PrivateKey(secret))


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field_bytes(num, b):
    return varint(num << 3 | 2) + varint(len(b)) + b


def field_fixed32(num, v):
    return varint(num << 3 | 5) + struct.pack("<I", v) if v else b""


def field_fixed64(num, v):
    return varint(num << 3 | 1) + struct.pack("<Q", v) if v else b""


class FixedDH(X25519DH):
    """X25519 whose next fresh key pair is the vector's ephemeral."""

    def __init__(self, e):
        super().__init__()
        self.e = e

    def generate_keypair(self, privatekey=None):
        if privatekey is None:
            return self.e
        return super().generate_keypair(privatekey)


def hs(initiator, s, rs, e):
    h = HandshakeState(SymmetricState(CipherState(ChaChaPolyCipher()), Blake2bHash()), FixedDH(e))
    h.initialize(KKHandshakePattern(), initiator, PROLOGUE, s=s, rs=rs.public)
    return h


def transport(cs, receiver, counter, msg):
    cs.set_nonce(counter)
    ct = cs.encrypt_with_ad(struct.pack("<Q", len(msg)), msg)
    inner = field_fixed32(1, receiver) + field_fixed64(2, counter) + field_bytes(3, ct)
    return field_bytes(6, inner)


def main():
    svc, host = keypair(seq(0x01)), keypair(seq(0x81))
    e_i, e_r = keypair(seq(0x41)), keypair(seq(0xC1))
    ts = struct.pack(">QI", (1 << 62) + WALL_NS // 10**9, WALL_NS % 10**9)

    ini = hs(True, svc, host, e_i)
    rsp = hs(False, host, svc, e_r)
    m1 = bytearray()
    ini.write_message(ts, m1)
    rsp.read_message(bytes(m1), bytearray())
    m2 = bytearray()
    rsp_cs = rsp.write_message(b"", m2)
    ini_cs = ini.read_message(bytes(m2), bytearray())

    mkey = hashlib.blake2b(b"nkp-mac1" + host.public.data, digest_size=32).digest()
    mac1 = hashlib.blake2b(struct.pack("<I", INI_INDEX) + bytes(m1), key=mkey, digest_size=16).digest()
    init = field_bytes(4, field_fixed32(1, INI_INDEX) + field_bytes(2, bytes(m1)) + field_bytes(3, mac1))
    resp = field_bytes(5, field_fixed32(1, RSP_INDEX) + field_fixed32(2, INI_INDEX) + field_bytes(3, bytes(m2)))
    # Split: the initiator sends with c1, the responder with c2.
    req = transport(ini_cs[0], RSP_INDEX, 0, REQUEST)
    rep = transport(rsp_cs[1], INI_INDEX, 0, REPLY)

    want = b"".join(struct.pack("<I", len(f)) + f for f in (init, resp, req, rep))
    got = open(sys.argv[1], "rb").read()
    names = ("HandshakeInit", "HandshakeResp", "Transport request", "Transport reply")
    off = 0
    for name, f in zip(names, (init, resp, req, rep)):
        n = struct.unpack_from("<I", got, off)[0]
        part = got[off + 4:off + 4 + n]
        if part != f:
            print("session-vector: %s differs:\n  nkp        %s\n  dissononce %s"
                  % (name, part.hex(), f.hex()), file=sys.stderr)
            return 1
        off += 4 + n
    if got != want:
        print("session-vector: trailing bytes", file=sys.stderr)
        return 1
    print("session-vector: all four frames match dissononce")
    return 0


if __name__ == "__main__":
    sys.exit(main())
