#!/usr/bin/python3
"""noise-interop: nkp's Noise_KK_25519_ChaChaPoly_BLAKE2b (through
noise-peer) against dissononce, an independent Python implementation, in
both roles.

    noise-interop.py NOISE_PEER

Per role: fresh random static keys on both sides, each pinning the other,
a random prologue, the handshake (payloads both ways, the handshake hashes
compared), transport messages both ways with explicit, non-consecutive
nonces (dissononce's CipherState.set_nonce), a REKEY of each direction, and
tampered messages, handshake and transport, that the receiving side must
refuse. noise-peer runs as a child process spoken to over its stdin and
stdout; no network.

Exit status: 0 all agreed, 1 a disagreement or failure, 77 (skipped)
dissononce is not installed. IT_WAIT_SCALE (default 1) scales the wait for
each answer of noise-peer.
"""
import os
import select
import subprocess
import sys

try:
    from dissononce.cipher.chachapoly import ChaChaPolyCipher
    from dissononce.dh.x25519.public import PublicKey
    from dissononce.dh.x25519.x25519 import X25519DH
    from dissononce.exceptions.decrypt import DecryptFailedException
    from dissononce.hash.blake2b import Blake2bHash
    from dissononce.processing.handshakepatterns.interactive.KK import KKHandshakePattern
    from dissononce.processing.impl.cipherstate import CipherState
    from dissononce.processing.impl.handshakestate import HandshakeState
    from dissononce.processing.impl.symmetricstate import SymmetricState
except ImportError as e:
    print("noise-interop: dissononce is not installed (%s): skipped" % e, file=sys.stderr)
    sys.exit(77)

PROTOCOL = "Noise_KK_25519_ChaChaPoly_BLAKE2b"
WAIT = 20 * int(os.environ.get("IT_WAIT_SCALE", "1"))
NONCES = [0, 1, 5, 2, 1000, 2**32 + 7, 2**63, 2**64 - 2]


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def hx(b):
    return b.hex() if b else "-"


def unhx(s):
    return b"" if s == "-" else bytes.fromhex(s)


def flip(b, bit):
    b = bytearray(b)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


class Peer:
    """noise-peer, one command line and one answer line at a time."""

    def __init__(self, path):
        self.proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buf = b""

    def _line(self):
        while b"\n" not in self.buf:
            ready, _, _ = select.select([self.proc.stdout], [], [], WAIT)
            check(ready, "noise-peer: no answer within %d s" % WAIT)
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            check(chunk, "noise-peer: exited (status %s)" % self.proc.poll())
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def call(self, *words):
        """('ok', bytes) or ('err', NAME)."""
        self.proc.stdin.write((" ".join(words) + "\n").encode())
        self.proc.stdin.flush()
        parts = self._line().split(" ")
        check(parts[0] in ("ok", "err"), "noise-peer: bad answer %r" % parts)
        if parts[0] == "err":
            return "err", parts[1]
        return "ok", unhx(parts[1]) if len(parts) > 1 else b""

    def ok(self, *words):
        status, value = self.call(*words)
        check(status == "ok", "noise-peer %s: %s" % (words[0], value))
        return value

    def refuses(self, want, *words):
        status, value = self.call(*words)
        check(status == "err" and value == want,
              "noise-peer %s: want err %s, got %s %s" % (words[0], want, status, value))

    def close(self):
        try:
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=WAIT)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def d_handshake(initiator, keypair, rs, prologue):
    hs = HandshakeState(SymmetricState(CipherState(ChaChaPolyCipher()), Blake2bHash()), X25519DH())
    hs.initialize(KKHandshakePattern(), initiator, prologue, s=keypair, rs=PublicKey(rs))
    check(hs.protocol_name == PROTOCOL, "dissononce runs %s" % hs.protocol_name)
    return hs


def d_rekey(cs):
    """REKEY(k) = the first 32 bytes of ENCRYPT(k, 2^64-1, zerolen, zeros).
    dissononce 0.34's CipherState.rekey keeps all 48 bytes of that
    ciphertext as the new key (and then fails on the next message), so the
    spec's truncation is applied here to its Cipher.rekey; the nonce is
    kept, as REKEY leaves n alone."""
    n = cs._nonce
    cs.initialize_key(cs.cipher.rekey(cs._key)[:32])
    cs.set_nonce(n)


def d_encrypt(cs, n, ad, pt):
    cs.set_nonce(n)
    return cs.encrypt_with_ad(ad, pt)


def d_decrypt(cs, n, ad, ct):
    cs.set_nonce(n)
    return cs.decrypt_with_ad(ad, ct)


def d_refuses(cs, n, ad, ct, what):
    try:
        d_decrypt(cs, n, ad, ct)
    except DecryptFailedException:
        return
    raise Failure("dissononce accepted %s" % what)


class Session:
    """One handshake between noise-peer and dissononce, up to Split."""

    def __init__(self, peer, nkp_initiator, prologue):
        self.peer = peer
        self.nkp_initiator = nkp_initiator
        self.prologue = prologue
        self.d_keys = X25519DH().generate_keypair()
        self.nkp_pub = peer.ok("keygen")
        role = "initiator" if nkp_initiator else "responder"
        peer.ok("hs", role, hx(self.d_keys.public.data), hx(prologue))
        self.d = d_handshake(not nkp_initiator, self.d_keys, self.nkp_pub, prologue)

    def restart(self):
        """A new handshake between the same keys."""
        role = "initiator" if self.nkp_initiator else "responder"
        self.peer.ok("hs", role, hx(self.d_keys.public.data), hx(self.prologue))
        self.d = d_handshake(not self.nkp_initiator, self.d_keys, self.nkp_pub, self.prologue)

    def nkp_to_d(self, payload):
        msg = self.peer.ok("write", hx(payload))
        buf = bytearray()
        ret = self.d.read_message(msg, buf)
        check(bytes(buf) == payload, "dissononce read another payload")
        return ret

    def d_to_nkp(self, payload):
        buf = bytearray()
        ret = self.d.write_message(payload, buf)
        got = self.peer.ok("read", hx(bytes(buf)))
        check(got == payload, "nkp read another payload")
        return ret

    def handshake(self, p1, p2):
        if self.nkp_initiator:
            check(self.nkp_to_d(p1) is None, "dissononce split after one message")
            cs = self.d_to_nkp(p2)
        else:
            check(self.d_to_nkp(p1) is None, "dissononce split after one message")
            cs = self.nkp_to_d(p2)
        check(cs is not None, "dissononce did not split")
        h = self.peer.ok("split")
        check(h == self.d.symmetricstate.get_handshake_hash(), "handshake hashes differ")
        # c1 carries initiator -> responder, c2 the other way.
        c1, c2 = cs
        self.d_send, self.d_recv = (c2, c1) if self.nkp_initiator else (c1, c2)


def transport(s, label):
    peer = s.peer
    for i, n in enumerate(NONCES):
        pt = os.urandom([0, 1, 100, 1000][i % 4])
        ad = os.urandom(i % 3 * 8)
        # nkp -> dissononce, and the same bytes from dissononce's cipher.
        ct = peer.ok("enc", str(n), hx(ad), hx(pt))
        check(ct == d_encrypt(s.d_recv, n, ad, pt), "%s: other bytes than dissononce's" % label)
        check(d_decrypt(s.d_recv, n, ad, ct) == pt, "%s: dissononce read another message" % label)
        # dissononce -> nkp
        ct = d_encrypt(s.d_send, n, ad, pt)
        check(peer.ok("dec", str(n), hx(ad), hx(ct)) == pt, "%s: nkp read another message" % label)


def tamper_transport(s):
    peer = s.peer
    pt, ad, n = b"tamper me" * 5, b"ad", 77
    ct = peer.ok("enc", str(n), hx(ad), hx(pt))
    for bit in (0, 8 * len(pt) - 1, 8 * len(ct) - 1):
        d_refuses(s.d_recv, n, ad, flip(ct, bit), "a tampered message from nkp")
    d_refuses(s.d_recv, n + 1, ad, ct, "a message under another nonce")
    d_refuses(s.d_recv, n, b"ae", ct, "a message with other associated data")
    check(d_decrypt(s.d_recv, n, ad, ct) == pt, "the genuine message after tampering")
    ct = d_encrypt(s.d_send, n, ad, pt)
    for bit in (0, 8 * len(pt) - 1, 8 * len(ct) - 1):
        peer.refuses("AUTH", "dec", str(n), hx(ad), hx(flip(ct, bit)))
    peer.refuses("AUTH", "dec", str(n + 1), hx(ad), hx(ct))
    peer.refuses("AUTH", "dec", str(n), "6165", hx(ct))
    peer.refuses("PARSE", "dec", str(n), hx(ad), hx(ct[:15]))
    peer.refuses("INVALID", "dec", str(2**64 - 1), hx(ad), hx(ct))
    peer.refuses("INVALID", "enc", str(2**64 - 1), hx(ad), hx(pt))
    check(peer.ok("dec", str(n), hx(ad), hx(ct)) == pt, "nkp: the genuine message after tampering")


def rekey(s):
    peer = s.peer
    pt, n = b"after rekey", 12345
    # nkp's sending direction: until dissononce rekeys too, it cannot read.
    peer.ok("rekey", "send")
    ct = peer.ok("enc", str(n), "-", hx(pt))
    d_refuses(s.d_recv, n, b"", ct, "a message under the key before REKEY")
    d_rekey(s.d_recv)
    check(d_decrypt(s.d_recv, n, b"", ct) == pt, "REKEY: dissononce cannot read nkp")
    check(d_encrypt(s.d_recv, n, b"", pt) == ct, "REKEY: other bytes for the same message")
    # The other direction.
    d_rekey(s.d_send)
    ct = d_encrypt(s.d_send, n, b"", pt)
    peer.refuses("AUTH", "dec", str(n), "-", hx(ct))
    peer.ok("rekey", "recv")
    check(peer.ok("dec", str(n), "-", hx(ct)) == pt, "REKEY: nkp cannot read dissononce")
    # Twice more each way, then ordinary traffic.
    for _ in range(2):
        peer.ok("rekey", "send")
        peer.ok("rekey", "recv")
        d_rekey(s.d_recv)
        d_rekey(s.d_send)
    transport(s, "after REKEY")


def tamper_handshake(s):
    """A tampered first and second message: the reader refuses each."""
    p1, p2 = b"first", b"second"
    n1 = 8 * (32 + len(p1) + 16)
    for bit in (0, 255, 256, n1 - 1):
        s.restart()
        if s.nkp_initiator:
            msg = s.peer.ok("write", hx(p1))
            try:
                s.d.read_message(flip(msg, bit), bytearray())
            except DecryptFailedException:
                continue
            raise Failure("dissononce accepted a tampered first message (bit %d)" % bit)
        buf = bytearray()
        s.d.write_message(p1, buf)
        s.peer.refuses("AUTH", "read", hx(flip(bytes(buf), bit)))
    n2 = 8 * (32 + len(p2) + 16)
    for bit in (0, 255, 256, n2 - 1):
        s.restart()
        if s.nkp_initiator:
            s.nkp_to_d(p1)
            buf = bytearray()
            s.d.write_message(p2, buf)
            s.peer.refuses("AUTH", "read", hx(flip(bytes(buf), bit)))
        else:
            s.d_to_nkp(p1)
            msg = s.peer.ok("write", hx(p2))
            try:
                s.d.read_message(flip(msg, bit), bytearray())
            except DecryptFailedException:
                continue
            raise Failure("dissononce accepted a tampered second message (bit %d)" % bit)
    # A handshake with a peer pinning another key.
    s.restart()
    other = X25519DH().generate_keypair()
    if s.nkp_initiator:
        d = d_handshake(False, s.d_keys, other.public.data, s.prologue)
        msg = s.peer.ok("write", hx(p1))
        try:
            d.read_message(msg, bytearray())
        except DecryptFailedException:
            return
        raise Failure("dissononce pinning another key accepted nkp")
    d = d_handshake(True, other, s.nkp_pub, s.prologue)
    buf = bytearray()
    d.write_message(p1, buf)
    s.peer.refuses("AUTH", "read", hx(bytes(buf)))


def run(path, nkp_initiator):
    label = "nkp initiator, dissononce responder" if nkp_initiator else \
        "dissononce initiator, nkp responder"
    peer = Peer(path)
    try:
        s = Session(peer, nkp_initiator, b"nkp interop " + os.urandom(16))
        s.handshake(os.urandom(40), b"")
        transport(s, label)
        tamper_transport(s)
        rekey(s)
        tamper_handshake(s)
    finally:
        peer.close()
    print("noise-interop: %s: handshake, %d transport messages each way, rekey, "
          "tampering: ok" % (label, 2 * len(NONCES)))


def main():
    if len(sys.argv) != 2:
        print("usage: noise-interop.py NOISE_PEER", file=sys.stderr)
        return 2
    try:
        run(sys.argv[1], True)
        run(sys.argv[1], False)
    except Failure as e:
        print("noise-interop: FAILED: %s" % e, file=sys.stderr)
        return 1
    except DecryptFailedException:
        print("noise-interop: FAILED: dissononce refused a genuine message from nkp",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
