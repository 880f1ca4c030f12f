"""The schema's enums and message layouts as importable names.

``from ringex.engine.wire.messages import NewOrder, Side`` gives the ``MessageLayout`` and the
``IntEnum`` derived from ``schema.xml``; nothing here restates a layout. A name missing
from the schema fails at import, which is the point: code and schema cannot drift apart.
"""

from __future__ import annotations

from ringex.engine.wire.codec import default_schema

SCHEMA = default_schema()
SLOT_SIZE = SCHEMA.slot_size

_e = SCHEMA.enum
Side = _e("Side")
OrdType = _e("OrdType")
TimeInForce = _e("TimeInForce")
Bool = _e("Bool")
StpMode = _e("StpMode")
MassCancelScope = _e("MassCancelScope")
InstrumentKind = _e("InstrumentKind")
HaltPolicy = _e("HaltPolicy")
TradingStatus = _e("TradingStatus")
FundsAction = _e("FundsAction")
KillScope = _e("KillScope")
KillAction = _e("KillAction")
CancelReason = _e("CancelReason")
RejectReason = _e("RejectReason")
LiquidationStage = _e("LiquidationStage")
FlowType = _e("FlowType")
NegotiationRejectCode = _e("NegotiationRejectCode")
EstablishmentRejectCode = _e("EstablishmentRejectCode")
RetransmitRejectCode = _e("RetransmitRejectCode")
TerminationCode = _e("TerminationCode")

_m = SCHEMA.message
# order entry
NewOrder = _m("NewOrder")
CancelOrder = _m("CancelOrder")
ReplaceOrder = _m("ReplaceOrder")
MassCancel = _m("MassCancel")
# admin
InstrumentDefinition = _m("InstrumentDefinition")
CreateAccount = _m("CreateAccount")
Funds = _m("Funds")
IndexPrice = _m("IndexPrice")
TradingStatusUpdate = _m("TradingStatusUpdate")
KillSwitch = _m("KillSwitch")
InstrumentLimits = _m("InstrumentLimits")
PerpetualParams = _m("PerpetualParams")
# engine output
OrderAccepted = _m("OrderAccepted")
OrderRejected = _m("OrderRejected")
Trade = _m("Trade")
OrderCanceled = _m("OrderCanceled")
OrderReplaced = _m("OrderReplaced")
CancelRejected = _m("CancelRejected")
StopTriggered = _m("StopTriggered")
MassCancelDone = _m("MassCancelDone")
BookAdd = _m("BookAdd")
BookExecute = _m("BookExecute")
BookReduce = _m("BookReduce")
BookDelete = _m("BookDelete")
BookReplace = _m("BookReplace")
InstrumentStatus = _m("InstrumentStatus")
KillSwitchStatus = _m("KillSwitchStatus")
AdminResult = _m("AdminResult")
MarkPrice = _m("MarkPrice")
FundingApplied = _m("FundingApplied")
Liquidation = _m("Liquidation")
# FIXP session layer: client and binary gateway only, never on a ring (no Stamp)
Negotiate = _m("Negotiate")
NegotiationResponse = _m("NegotiationResponse")
NegotiationReject = _m("NegotiationReject")
Establish = _m("Establish")
EstablishmentAck = _m("EstablishmentAck")
EstablishmentReject = _m("EstablishmentReject")
Sequence = _m("Sequence")
RetransmitRequest = _m("RetransmitRequest")
Retransmission = _m("Retransmission")
RetransmitReject = _m("RetransmitReject")
Terminate = _m("Terminate")
NotApplied = _m("NotApplied")

ORDER_ENTRY = (NewOrder, CancelOrder, ReplaceOrder, MassCancel)
ADMIN = (InstrumentDefinition, CreateAccount, Funds, IndexPrice, TradingStatusUpdate, KillSwitch,
         InstrumentLimits, PerpetualParams)
INBOUND = ORDER_ENTRY + ADMIN
SESSION = (Negotiate, NegotiationResponse, NegotiationReject, Establish, EstablishmentAck, EstablishmentReject,
           Sequence, RetransmitRequest, Retransmission, RetransmitReject, Terminate, NotApplied)
#: every message that crosses a ring (and the journal): all but the session layer's
RING = tuple(x for x in SCHEMA.messages.values() if x not in SESSION)
