#!/usr/bin/env python3
# Prints the pykmip_* lines of tests/vectors/kmip-v1.txt: KMIP 1.4 request
# and response messages as PyKMIP's own codec (python3-pykmip 0.10, an
# implementation independent of nkp's) writes them. Run by hand when the
# vectors are reviewed; no test runs it:
#   python3 tests/vectors/kmip-pykmip.py
import binascii

from kmip.core import attributes, enums, misc, objects, secrets, utils
from kmip.core.factories import attributes as af
from kmip.core.messages import contents, messages, payloads

NOW = 0x47DA67F8  # the time stamp of the spec's examples
V14 = enums.KMIPVersion.KMIP_1_4
F = af.AttributeFactory()


def hexof(m):
    s = utils.BytearrayStream()
    m.write(s, kmip_version=V14)
    return binascii.hexlify(s.buffer).decode()


def req(op, payload):
    h = messages.RequestHeader(protocol_version=contents.ProtocolVersion(1, 4),
                               batch_count=contents.BatchCount(1))
    bi = messages.RequestBatchItem(operation=contents.Operation(op), request_payload=payload)
    return hexof(messages.RequestMessage(request_header=h, batch_items=[bi]))


def resp(op, payload=None, status=enums.ResultStatus.SUCCESS, reason=None, msg=None):
    h = messages.ResponseHeader(protocol_version=contents.ProtocolVersion(1, 4),
                                time_stamp=contents.TimeStamp(NOW),
                                batch_count=contents.BatchCount(1))
    bi = messages.ResponseBatchItem(
        operation=contents.Operation(op),
        result_status=contents.ResultStatus(status),
        result_reason=contents.ResultReason(reason) if reason else None,
        result_message=contents.ResultMessage(msg) if msg else None,
        response_payload=payload)
    return hexof(messages.ResponseMessage(response_header=h, batch_items=[bi]))


Op = enums.Operation
uid = attributes.UniqueIdentifier
name = attributes.Name.create("nkp-test", enums.NameType.UNINTERPRETED_TEXT_STRING)
out = {
    "pykmip_discover_request": req(Op.DISCOVER_VERSIONS, payloads.DiscoverVersionsRequestPayload()),
    "pykmip_get_request": req(Op.GET, payloads.GetRequestPayload(
        unique_identifier="1", key_format_type=enums.KeyFormatType.RAW)),
    "pykmip_get_state_request": req(Op.GET_ATTRIBUTES, payloads.GetAttributesRequestPayload(
        unique_identifier="1", attribute_names=["State"])),
    "pykmip_locate_request": req(Op.LOCATE, payloads.LocateRequestPayload(
        maximum_items=64, attributes=[F.create_attribute(enums.AttributeType.NAME, name)])),
    "pykmip_revoke_request": req(Op.REVOKE, payloads.RevokeRequestPayload(
        unique_identifier=uid("1"), revocation_reason=objects.RevocationReason(
            code=enums.RevocationReasonCode.CESSATION_OF_OPERATION))),
    "pykmip_activate_request": req(Op.ACTIVATE, payloads.ActivateRequestPayload(
        unique_identifier=uid("1"))),
}
block = objects.KeyBlock(
    key_format_type=misc.KeyFormatType(enums.KeyFormatType.RAW),
    key_value=objects.KeyValue(key_material=objects.KeyMaterial(bytes(range(32)))),
    cryptographic_algorithm=attributes.CryptographicAlgorithm(enums.CryptographicAlgorithm.AES),
    cryptographic_length=attributes.CryptographicLength(256))
out.update({
    "pykmip_discover_response": resp(Op.DISCOVER_VERSIONS, payloads.DiscoverVersionsResponsePayload(
        protocol_versions=[contents.ProtocolVersion(1, 4), contents.ProtocolVersion(1, 2)])),
    "pykmip_get_response": resp(Op.GET, payloads.GetResponsePayload(
        object_type=enums.ObjectType.SYMMETRIC_KEY, unique_identifier="1",
        secret=secrets.SymmetricKey(block))),
    "pykmip_get_state_response": resp(Op.GET_ATTRIBUTES, payloads.GetAttributesResponsePayload(
        unique_identifier="1",
        attributes=[F.create_attribute(enums.AttributeType.STATE, enums.State.DEACTIVATED)])),
    "pykmip_locate_response": resp(Op.LOCATE, payloads.LocateResponsePayload(
        unique_identifiers=["1", "2"])),
    "pykmip_activate_response": resp(Op.ACTIVATE, payloads.ActivateResponsePayload(
        unique_identifier=uid("1"))),
    "pykmip_not_found_response": resp(Op.GET, None, enums.ResultStatus.OPERATION_FAILED,
                                      enums.ResultReason.ITEM_NOT_FOUND,
                                      "Could not locate object: 9"),
})
for k, v in out.items():
    print("%s: %s" % (k, v))
