#!/usr/bin/python3
"""A small fake KMIP 1.4 server for the KMIP client tests.

kmip-fake.py --port P --ca FILE --cert FILE --key FILE --ready FILE
             [--record FILE] [--mode MODE]

Listens on 127.0.0.1:P for TLS (1.2 or later) and requires a client
certificate signed by --ca. It decodes the TTLV requests itself (KMIP 1.4
section 9.1: 3-byte tag, 1-byte type, 4-byte big-endian length, the value
padded to 8 bytes) and answers with KMIP 1.4 Response Messages. Every
request's exact bytes are appended, as one line of hex, to --record.
Once listening it writes its PID to --ready.

Modes:
  ok            Discover Versions, Create, Add Attribute (any name, x-
                names too; echoes the Attribute), Activate, Get (a fixed
                32-byte AES key, Raw), Get Attributes (State), Locate,
                Revoke, Destroy
  silent        completes TLS, reads requests, never answers
  stall-tls     accepts TCP, never speaks TLS
  garbage       answers every request with bytes that are not TTLV
  wrong-op      answers with another Operation than the one asked
  refuse-attrs  like ok, but Add Attribute of an x- name fails with
                Operation Failed / Invalid Field
  double        like ok, but sends every answer twice, at once (the
                second one unasked, to desynchronise a kept connection)
  trickle       like ok, but sends each answer one byte every 0.2 s
  huge          answers with a header announcing 4 GiB, then holds
  drop-second   like ok, but on each connection carries out the second
                request and closes without answering it
Stdlib only. SIGTERM exits.
"""

import argparse
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time

# The key Get returns: fixed, known to the tests (its SHA-256 is what a
# client's fingerprint must print).
FIXED_KEY = bytes(range(0x00, 0x20))

# Types
STRUCTURE, INTEGER, LONG_INTEGER, BIG_INTEGER, ENUMERATION, BOOLEAN, \
    TEXT_STRING, BYTE_STRING, DATE_TIME, INTERVAL = range(1, 11)

# Tags
T_ATTRIBUTE = 0x420008
T_ATTRIBUTE_NAME = 0x42000A
T_ATTRIBUTE_VALUE = 0x42000B
T_BATCH_COUNT = 0x42000D
T_BATCH_ITEM = 0x42000F
T_CRYPTOGRAPHIC_ALGORITHM = 0x420028
T_CRYPTOGRAPHIC_LENGTH = 0x42002A
T_KEY_BLOCK = 0x420040
T_KEY_FORMAT_TYPE = 0x420042
T_KEY_MATERIAL = 0x420043
T_KEY_VALUE = 0x420045
T_NAME = 0x420053
T_NAME_VALUE = 0x420055
T_OBJECT_TYPE = 0x420057
T_OPERATION = 0x42005C
T_PROTOCOL_VERSION = 0x420069
T_PROTOCOL_VERSION_MAJOR = 0x42006A
T_PROTOCOL_VERSION_MINOR = 0x42006B
T_REQUEST_HEADER = 0x420077
T_REQUEST_MESSAGE = 0x420078
T_REQUEST_PAYLOAD = 0x420079
T_RESPONSE_HEADER = 0x42007A
T_RESPONSE_MESSAGE = 0x42007B
T_RESPONSE_PAYLOAD = 0x42007C
T_RESULT_MESSAGE = 0x42007D
T_RESULT_REASON = 0x42007E
T_RESULT_STATUS = 0x42007F
T_REVOCATION_REASON = 0x420081
T_REVOCATION_REASON_CODE = 0x420082
T_STATE = 0x42008D
T_SYMMETRIC_KEY = 0x42008F
T_TEMPLATE_ATTRIBUTE = 0x420091
T_TIME_STAMP = 0x420092
T_UNIQUE_BATCH_ITEM_ID = 0x420093
T_UNIQUE_IDENTIFIER = 0x420094

# Operations
OP_CREATE = 0x01
OP_LOCATE = 0x08
OP_GET = 0x0A
OP_GET_ATTRIBUTES = 0x0B
OP_ADD_ATTRIBUTE = 0x0D
OP_ACTIVATE = 0x12
OP_REVOKE = 0x13
OP_DESTROY = 0x14
OP_QUERY = 0x18
OP_DISCOVER_VERSIONS = 0x1E

# Result status and reasons
SUCCESS, OPERATION_FAILED = 0, 1
ITEM_NOT_FOUND = 0x01
INVALID_MESSAGE = 0x04
OPERATION_NOT_SUPPORTED = 0x05
INVALID_FIELD = 0x07

# Enumerations
OBJECT_SYMMETRIC_KEY = 0x02
KEY_FORMAT_RAW = 0x01
ALG_AES = 0x03
STATE_PRE_ACTIVE, STATE_ACTIVE, STATE_DEACTIVATED, STATE_COMPROMISED, \
    STATE_DESTROYED = range(1, 6)
REASON_KEY_COMPROMISE = 0x02

VERSIONS = [(1, 4), (1, 3), (1, 2), (1, 1), (1, 0)]
MAX_MESSAGE = 1 << 20


class TTLVError(Exception):
    pass


class Item:
    """One decoded TTLV item; raw is its exact encoding."""

    def __init__(self, tag, typ, value, raw):
        self.tag, self.type, self.value, self.raw = tag, typ, value, raw

    def find(self, tag):
        for c in self.value:
            if c.tag == tag:
                return c
        return None

    def find_all(self, tag):
        return [c for c in self.value if c.tag == tag]


def decode(buf, off=0, end=None):
    """Decodes the items in buf[off:end]; returns a list of Item."""
    end = len(buf) if end is None else end
    items = []
    while off < end:
        if end - off < 8:
            raise TTLVError("truncated header at %d" % off)
        tag = int.from_bytes(buf[off:off + 3], "big")
        typ = buf[off + 3]
        length = struct.unpack(">I", buf[off + 4:off + 8])[0]
        padded = (length + 7) // 8 * 8
        if off + 8 + padded > end:
            raise TTLVError("item %06X overruns its container" % tag)
        v = buf[off + 8:off + 8 + length]
        if typ == STRUCTURE:
            value = decode(buf, off + 8, off + 8 + length)
        elif typ in (INTEGER, ENUMERATION, INTERVAL):
            if length != 4:
                raise TTLVError("item %06X: length %d" % (tag, length))
            value = struct.unpack(">i" if typ == INTEGER else ">I", v)[0]
        elif typ in (LONG_INTEGER, DATE_TIME, BOOLEAN):
            if length != 8:
                raise TTLVError("item %06X: length %d" % (tag, length))
            value = struct.unpack(">q", v)[0]
        elif typ == TEXT_STRING:
            value = v.decode("utf-8")
        elif typ in (BYTE_STRING, BIG_INTEGER):
            value = bytes(v)
        else:
            raise TTLVError("item %06X: unknown type %d" % (tag, typ))
        items.append(Item(tag, typ, value, bytes(buf[off:off + 8 + padded])))
        off += 8 + padded
    return items


def enc(tag, typ, value):
    """Encodes one item; a structure's value is a list of encoded items."""
    if typ == STRUCTURE:
        v = b"".join(value)
    elif typ == INTEGER:
        v = struct.pack(">i", value)
    elif typ in (ENUMERATION, INTERVAL):
        v = struct.pack(">I", value)
    elif typ in (LONG_INTEGER, DATE_TIME):
        v = struct.pack(">q", value)
    elif typ == BOOLEAN:
        v = struct.pack(">Q", 1 if value else 0)
    elif typ == TEXT_STRING:
        v = value.encode("utf-8")
    else:
        v = bytes(value)
    pad = (8 - len(v) % 8) % 8
    return tag.to_bytes(3, "big") + bytes([typ]) + struct.pack(">I", len(v)) + v + b"\0" * pad


def uid_item(uid):
    return enc(T_UNIQUE_IDENTIFIER, TEXT_STRING, uid)


def version_item(major, minor):
    return enc(T_PROTOCOL_VERSION, STRUCTURE, [
        enc(T_PROTOCOL_VERSION_MAJOR, INTEGER, major),
        enc(T_PROTOCOL_VERSION_MINOR, INTEGER, minor)])


class Failure(Exception):
    def __init__(self, reason, message):
        Exception.__init__(self, message)
        self.reason, self.message = reason, message


class Store:
    """Objects the fake created: id -> [name, state]."""

    def __init__(self):
        self.lock = threading.Lock()
        self.next_id = 1
        self.objects = {}

    def create(self, name):
        with self.lock:
            uid = str(self.next_id)
            self.next_id += 1
            self.objects[uid] = [name, STATE_PRE_ACTIVE]
            return uid

    def get(self, uid):
        with self.lock:
            if uid not in self.objects:
                raise Failure(ITEM_NOT_FOUND, "object %s not found" % uid)
            return self.objects[uid]

    def set_state(self, uid, state):
        with self.lock:
            if uid not in self.objects:
                raise Failure(ITEM_NOT_FOUND, "object %s not found" % uid)
            self.objects[uid][1] = state

    def locate(self, name):
        with self.lock:
            return [u for u, (n, _) in sorted(self.objects.items(), key=lambda x: int(x[0]))
                    if name is None or n == name]


def payload_uid(payload):
    u = payload.find(T_UNIQUE_IDENTIFIER) if payload is not None else None
    if u is None:
        raise Failure(INVALID_FIELD, "no Unique Identifier in the request")
    return u.value


def name_in(attrs):
    """The Name value among a list of Attribute items, or None."""
    for a in attrs:
        n = a.find(T_ATTRIBUTE_NAME)
        v = a.find(T_ATTRIBUTE_VALUE)
        if n is not None and n.value == "Name" and v is not None and v.type == STRUCTURE:
            nv = v.find(T_NAME_VALUE)
            if nv is not None:
                return nv.value
    return None


class Fake:
    def __init__(self, mode):
        self.mode = mode
        self.store = Store()

    def operation(self, op, payload):
        """Returns the encoded payload children, or raises Failure."""
        s = self.store
        if op == OP_DISCOVER_VERSIONS:
            asked = [] if payload is None else [
                (v.find(T_PROTOCOL_VERSION_MAJOR).value, v.find(T_PROTOCOL_VERSION_MINOR).value)
                for v in payload.find_all(T_PROTOCOL_VERSION)]
            vs = [v for v in asked if v in VERSIONS] if asked else VERSIONS
            return [version_item(*v) for v in vs]
        if op == OP_CREATE:
            ta = payload.find(T_TEMPLATE_ATTRIBUTE) if payload is not None else None
            name = name_in(ta.find_all(T_ATTRIBUTE)) if ta is not None else None
            uid = s.create(name)
            return [enc(T_OBJECT_TYPE, ENUMERATION, OBJECT_SYMMETRIC_KEY), uid_item(uid)]
        if op == OP_ADD_ATTRIBUTE:
            uid = payload_uid(payload)
            attr = payload.find(T_ATTRIBUTE)
            if attr is None or attr.find(T_ATTRIBUTE_NAME) is None:
                raise Failure(INVALID_FIELD, "no Attribute in the request")
            name = attr.find(T_ATTRIBUTE_NAME).value
            if self.mode == "refuse-attrs" and name.lower().startswith("x-"):
                raise Failure(INVALID_FIELD, "custom attribute %s is not supported" % name)
            return [uid_item(uid), attr.raw]
        if op == OP_ACTIVATE:
            uid = payload_uid(payload)
            s.set_state(uid, STATE_ACTIVE)
            return [uid_item(uid)]
        if op == OP_GET:
            uid = payload_uid(payload)
            if s.get(uid)[1] == STATE_DESTROYED:
                raise Failure(ITEM_NOT_FOUND, "object %s is destroyed" % uid)
            block = enc(T_KEY_BLOCK, STRUCTURE, [
                enc(T_KEY_FORMAT_TYPE, ENUMERATION, KEY_FORMAT_RAW),
                enc(T_KEY_VALUE, STRUCTURE, [enc(T_KEY_MATERIAL, BYTE_STRING, FIXED_KEY)]),
                enc(T_CRYPTOGRAPHIC_ALGORITHM, ENUMERATION, ALG_AES),
                enc(T_CRYPTOGRAPHIC_LENGTH, INTEGER, 256)])
            return [enc(T_OBJECT_TYPE, ENUMERATION, OBJECT_SYMMETRIC_KEY), uid_item(uid),
                    enc(T_SYMMETRIC_KEY, STRUCTURE, [block])]
        if op == OP_GET_ATTRIBUTES:
            uid = payload_uid(payload)
            state = s.get(uid)[1]
            return [uid_item(uid), enc(T_ATTRIBUTE, STRUCTURE, [
                enc(T_ATTRIBUTE_NAME, TEXT_STRING, "State"),
                enc(T_ATTRIBUTE_VALUE, ENUMERATION, state)])]
        if op == OP_LOCATE:
            name = name_in(payload.find_all(T_ATTRIBUTE)) if payload is not None else None
            return [uid_item(u) for u in s.locate(name)]
        if op == OP_REVOKE:
            uid = payload_uid(payload)
            rr = payload.find(T_REVOCATION_REASON)
            code = rr.find(T_REVOCATION_REASON_CODE) if rr is not None else None
            compromised = code is not None and code.value == REASON_KEY_COMPROMISE
            s.set_state(uid, STATE_COMPROMISED if compromised else STATE_DEACTIVATED)
            return [uid_item(uid)]
        if op == OP_DESTROY:
            uid = payload_uid(payload)
            s.set_state(uid, STATE_DESTROYED)
            return [uid_item(uid)]
        raise Failure(OPERATION_NOT_SUPPORTED, "operation %d is not supported" % op)

    def batch_item(self, item):
        opi = item.find(T_OPERATION)
        if opi is None:
            raise TTLVError("a batch item without an Operation")
        op = opi.value
        payload = item.find(T_REQUEST_PAYLOAD)
        out_op = op
        if self.mode == "wrong-op":
            out_op = OP_QUERY if op != OP_QUERY else OP_GET
        children = [enc(T_OPERATION, ENUMERATION, out_op)]
        bid = item.find(T_UNIQUE_BATCH_ITEM_ID)
        if bid is not None:
            children.append(bid.raw)
        try:
            result = self.operation(op, payload)
        except Failure as f:
            children += [enc(T_RESULT_STATUS, ENUMERATION, OPERATION_FAILED),
                         enc(T_RESULT_REASON, ENUMERATION, f.reason),
                         enc(T_RESULT_MESSAGE, TEXT_STRING, f.message)]
        else:
            children += [enc(T_RESULT_STATUS, ENUMERATION, SUCCESS),
                         enc(T_RESPONSE_PAYLOAD, STRUCTURE, result)]
        return enc(T_BATCH_ITEM, STRUCTURE, children)

    def respond(self, request):
        msgs = decode(request)
        if len(msgs) != 1 or msgs[0].tag != T_REQUEST_MESSAGE or msgs[0].type != STRUCTURE:
            raise TTLVError("not a Request Message")
        items = msgs[0].find_all(T_BATCH_ITEM)
        if not items or msgs[0].find(T_REQUEST_HEADER) is None:
            raise TTLVError("no Request Header or no Batch Item")
        out = [self.batch_item(i) for i in items]
        header = enc(T_RESPONSE_HEADER, STRUCTURE, [
            version_item(1, 4),
            enc(T_TIME_STAMP, DATE_TIME, int(time.time())),
            enc(T_BATCH_COUNT, INTEGER, len(out))])
        return enc(T_RESPONSE_MESSAGE, STRUCTURE, [header] + out)


# Not TTLV: a Response Message header whose one child has type 0xFF; the
# lengths are consistent, so that a client reads it all and must reject it.
GARBAGE = bytes.fromhex("42007B0100000010") + bytes.fromhex("420099FF00000004") + b"junk\0\0\0\0"


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class Server:
    def __init__(self, a):
        self.a = a
        self.fake = Fake(a.mode)
        self.record_lock = threading.Lock()
        self.ctx = None
        if a.mode != "stall-tls":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(a.ca)
            ctx.load_cert_chain(a.cert, a.key)
            self.ctx = ctx

    def log(self, msg):
        sys.stderr.write("kmip-fake[%s]: %s\n" % (self.a.mode, msg))
        sys.stderr.flush()

    def record(self, data):
        if not self.a.record:
            return
        with self.record_lock:
            with open(self.a.record, "a") as f:
                f.write(data.hex() + "\n")

    def hold(self, conn):
        """Keeps a connection open, reading and dropping, until the peer goes."""
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass

    def send_answer(self, conn, answer):
        if self.a.mode == "trickle":
            for i in range(len(answer)):
                conn.sendall(answer[i:i + 1])
                time.sleep(0.2)
            return
        # double: both copies at once, so that the extra one is there
        # before the client's next request (sent later, it races it).
        conn.sendall(answer * 2 if self.a.mode == "double" else answer)

    def serve_conn(self, raw, addr):
        try:
            if self.ctx is None:
                self.hold(raw)
                return
            try:
                conn = self.ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as e:
                self.log("TLS handshake with %s:%d failed: %s" % (addr[0], addr[1], e))
                return
            self.log("TLS from %s:%d, %s, client %s" % (
                addr[0], addr[1], conn.version(),
                dict(x[0] for x in conn.getpeercert().get("subject", ())).get("commonName")))
            served = 0
            while True:
                head = read_exact(conn, 8)
                if head is None:
                    return
                length = struct.unpack(">I", head[4:8])[0]
                if length > MAX_MESSAGE:
                    self.log("a request of %d bytes: closing" % length)
                    return
                body = read_exact(conn, length)
                if body is None:
                    return
                request = head + body
                self.record(request)
                if self.a.mode == "silent":
                    continue
                if self.a.mode == "garbage":
                    conn.sendall(GARBAGE)
                    continue
                if self.a.mode == "huge":
                    conn.sendall(bytes.fromhex("42007B01FFFFFFF0"))
                    continue
                try:
                    answer = self.fake.respond(request)
                except TTLVError as e:
                    self.log("bad request: %s: closing" % e)
                    return
                served += 1
                if self.a.mode == "drop-second" and served == 2:
                    return
                self.send_answer(conn, answer)
        except OSError as e:
            self.log("connection from %s:%d: %s" % (addr[0], addr[1], e))
        finally:
            try:
                raw.close()
            except OSError:
                pass

    def run(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.a.port))
        ls.listen(16)
        tmp = self.a.ready + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % os.getpid())
        os.rename(tmp, self.a.ready)
        self.log("listening on 127.0.0.1:%d" % self.a.port)
        while True:
            raw, addr = ls.accept()
            threading.Thread(target=self.serve_conn, args=(raw, addr), daemon=True).start()


MODES = ("ok", "silent", "stall-tls", "garbage", "wrong-op", "refuse-attrs", "double",
         "trickle", "huge", "drop-second")


def main():
    p = argparse.ArgumentParser(prog="kmip-fake")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--record")
    p.add_argument("--mode", choices=MODES, default="ok")
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    Server(a).run()


if __name__ == "__main__":
    main()
