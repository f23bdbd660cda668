#!/usr/bin/python3
"""PyKMIP's own client, as a reference peer for the KMIP tests.

kmip-pyclient.py --host H --port P --ca FILE --cert FILE --key FILE
                 [--timeout S] OP ARGS

ops: create NAME | activate ID | state ID | fingerprint ID | locate NAME |
     revoke ID | revoke-compromised ID | destroy ID | bench N

Prints no key bytes: fingerprint prints the SHA-256 of them. Exit 0 ok, 1 on
a KMIP or connection error (message on stderr), 2 on a usage error.
"""

import argparse
import hashlib
import sys
import time

from kmip import enums
from kmip.core import exceptions as core_exceptions
from kmip.pie import client as pie_client
from kmip.pie import exceptions as pie_exceptions

USAGE_MASK = [enums.CryptographicUsageMask.WRAP_KEY,
              enums.CryptographicUsageMask.UNWRAP_KEY]


def create(c, name):
    return c.create(enums.CryptographicAlgorithm.AES, 256, name=name,
                    cryptographic_usage_mask=USAGE_MASK)


def op_create(c, args):
    print(create(c, args[0]))


def op_activate(c, args):
    c.activate(args[0])


def op_state(c, args):
    attrs = c.get_attributes(args[0], ["State"])[1]
    for a in attrs:
        if a.attribute_name.value == "State":
            print(a.attribute_value.value.name)
            return
    raise RuntimeError("no State attribute in the answer")


def op_fingerprint(c, args):
    key = c.get(args[0])
    print(hashlib.sha256(bytes(key.value)).hexdigest())


def op_locate(c, args):
    for uid in c.locate(attributes=[
            c.attribute_factory.create_attribute(
                enums.AttributeType.NAME, args[0])]):
        print(uid)


def revoke(c, uid, reason):
    c.revoke(reason, uid, revocation_message="nkp test")


def op_revoke(c, args):
    revoke(c, args[0], enums.RevocationReasonCode.CESSATION_OF_OPERATION)


def op_revoke_compromised(c, args):
    revoke(c, args[0], enums.RevocationReasonCode.KEY_COMPROMISE)


def op_destroy(c, args):
    c.destroy(args[0])


def op_bench(c, args):
    n = int(args[0])
    if n < 1:
        raise ValueError("bench needs N >= 1")
    t0 = time.monotonic()
    for i in range(n):
        c.get(create(c, "bench-%d" % i))
    dt = time.monotonic() - t0
    print("ops_per_s=%.1f" % (2 * n / dt))


OPS = {
    "create": (op_create, 1),
    "activate": (op_activate, 1),
    "state": (op_state, 1),
    "fingerprint": (op_fingerprint, 1),
    "locate": (op_locate, 1),
    "revoke": (op_revoke, 1),
    "revoke-compromised": (op_revoke_compromised, 1),
    "destroy": (op_destroy, 1),
    "bench": (op_bench, 1),
}


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("kmip-pyclient: %s\n" % message)
        sys.exit(2)


def main():
    p = Parser(prog="kmip-pyclient")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--timeout", type=int, default=30,
                   help="seconds per socket operation (default 30)")
    p.add_argument("op", choices=sorted(OPS))
    p.add_argument("args", nargs="*")
    a = p.parse_args()
    fn, nargs = OPS[a.op]
    if len(a.args) != nargs:
        p.error("%s takes %d argument(s)" % (a.op, nargs))

    c = pie_client.ProxyKmipClient(
        hostname=a.host, port=a.port, cert=a.cert, key=a.key, ca=a.ca,
        config_file="/dev/null", kmip_version=enums.KMIPVersion.KMIP_1_4)
    c.proxy.timeout = a.timeout
    where = "%s:%d" % (a.host, a.port)
    try:
        c.open()
    except Exception as e:
        sys.stderr.write("kmip-pyclient: %s: cannot connect: %s\n" % (where, e))
        return 1
    try:
        fn(c, a.args)
    except (pie_exceptions.KmipOperationFailure,
            core_exceptions.KmipError) as e:
        sys.stderr.write("kmip-pyclient: %s: %s failed: %s\n" % (where, a.op, e))
        return 1
    except Exception as e:
        sys.stderr.write("kmip-pyclient: %s: %s failed: %s: %s\n"
                         % (where, a.op, type(e).__name__, e))
        return 1
    finally:
        try:
            c.close()
        except Exception:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
