"""Field references for the compiled engine, derived from the schema's codecs.

The compiled engine reads and writes SBE messages through one ``int64`` view of a slot:
an 8-byte field is one word (its index), a smaller field is a ``(word, shift, mask)``
triple inside a word. Every number here comes from ``ringex.engine.wire.messages`` (the codec's
offsets and the schema's enum values); none is typed by hand. numba freezes these module
constants into the compiled code: ``ringex.engine.kernel.jitcache`` clears the numba cache of
the kernel, and of every other folder with compiled code, when the schema (or any wire source,
or a source of that folder) changes.
"""

from __future__ import annotations

import struct

import numpy as np

from ringex.engine.wire import messages as M
from ringex.engine.wire.codec import HEADER, MessageLayout, SchemaError

SCHEMA = M.SCHEMA
SLOT_SIZE = M.SLOT_SIZE
if SLOT_SIZE % 8:
    raise SchemaError(f"slot size {SLOT_SIZE} is not a multiple of 8")
SLOT_WORDS = SLOT_SIZE // 8
SCHEMA_ID = SCHEMA.schema_id
SCHEMA_VERSION = SCHEMA.version


def word(layout: MessageLayout, name: str) -> int:
    """Word index of an 8-byte field."""
    f = layout.field(name)
    if f.size != 8 or f.offset % 8:
        raise SchemaError(f"{layout.name}.{name}: the engine needs an aligned 8-byte field here")
    return f.offset // 8


def small(layout: MessageLayout, name: str) -> tuple[int, int, int]:
    """``(word, shift, mask)`` of a 1, 2 or 4-byte field."""
    f = layout.field(name)
    if f.size not in (1, 2, 4) or f.offset % f.size:
        raise SchemaError(f"{layout.name}.{name}: the engine needs an aligned 1, 2 or 4-byte field here")
    return (f.offset // 8, 8 * (f.offset % 8), (1 << (8 * f.size)) - 1)


def header_word(layout: MessageLayout) -> int:
    """The message header (blockLength, templateId, schemaId, version) as one int64."""
    return int(np.frombuffer(layout.header_bytes, dtype="<i8")[0])


def _header_field(index: int) -> tuple[int, int, int]:
    fmt = HEADER.format.lstrip("<")
    offset = struct.calcsize("<" + fmt[:index])
    size = struct.calcsize("<" + fmt[index])
    return (offset // 8, 8 * (offset % 8), (1 << (8 * size)) - 1)


if HEADER.size != 8:
    raise SchemaError("the engine reads the SBE message header as one 8-byte word")
HDR_TEMPLATE = _header_field(1)
HDR_SCHEMA = _header_field(2)
HDR_VERSION = _header_field(3)

# The Stamp opens every message that crosses a ring (all but the gateway's session layer):
# the engine copies it from input to events.
STAMP_SEQ = word(M.NewOrder, "seq")
STAMP_TS = word(M.NewOrder, "timestampNs")
STAMP_ING = word(M.NewOrder, "ingressNs")
for _layout in M.RING:
    if (word(_layout, "seq"), word(_layout, "timestampNs"), word(_layout, "ingressNs")) != (
        STAMP_SEQ, STAMP_TS, STAMP_ING,
    ):
        raise SchemaError(f"{_layout.name}: the Stamp must open every message at the same offset")

# -- enum values ----------------------------------------------------------------------------
BUY = int(M.Side.Buy)
SELL = int(M.Side.Sell)
MARKET = int(M.OrdType.Market)
LIMIT = int(M.OrdType.Limit)
STOP = int(M.OrdType.Stop)
STOP_LIMIT = int(M.OrdType.StopLimit)
DAY = int(M.TimeInForce.Day)
GTC = int(M.TimeInForce.GTC)
IOC = int(M.TimeInForce.IOC)
FOK = int(M.TimeInForce.FOK)
STP_DEFAULT = int(M.StpMode.AccountDefault)
STP_OFF = int(M.StpMode.Off)
STP_CANCEL_RESTING = int(M.StpMode.CancelResting)
STP_CANCEL_AGGRESSOR = int(M.StpMode.CancelAggressor)
STP_CANCEL_BOTH = int(M.StpMode.CancelBoth)
STP_DECREMENT_BOTH = int(M.StpMode.DecrementBoth)
STP_MAX = max(int(v) for v in M.StpMode)
SCOPE_ACCOUNT = int(M.MassCancelScope.Account)
SCOPE_INSTRUMENT = int(M.MassCancelScope.Instrument)
SCOPE_ACCOUNT_INSTRUMENT = int(M.MassCancelScope.AccountInstrument)
SCOPE_SESSION = int(M.MassCancelScope.Session)
KILL_ACCOUNT = int(M.KillScope.Account)
KILL_SESSION = int(M.KillScope.Session)
KILL_INSTRUMENT = int(M.KillScope.Instrument)
KILL_EXCHANGE = int(M.KillScope.Exchange)
KILL_ENGAGE = int(M.KillAction.Engage)
KILL_RELEASE = int(M.KillAction.Release)
KIND_SPOT = int(M.InstrumentKind.Spot)
KIND_PERPETUAL = int(M.InstrumentKind.Perpetual)
POLICY_REJECT = int(M.HaltPolicy.Reject)
POLICY_QUEUE = int(M.HaltPolicy.Queue)
TRADING = int(M.TradingStatus.Trading)
HALTED = int(M.TradingStatus.Halted)
CLOSED = int(M.TradingStatus.Closed)
BOOL_TRUE = int(M.Bool["True"])  # postOnly / reduceOnly must be 0 or this

_C = M.CancelReason
CXL_USER = int(_C.User)
CXL_IOC = int(_C.IocRemainder)
CXL_MARKET = int(_C.MarketRemainder)
CXL_SELF_TRADE = int(_C.SelfTrade)
CXL_MASS = int(_C.MassCancel)
CXL_EXPIRED = int(_C.Expired)
CXL_KILL = int(_C.KillSwitch)
CXL_HALTED = int(_C.Halted)

_R = M.RejectReason
R_NONE = int(_R["None"])
R_UNKNOWN_INSTRUMENT = int(_R.UnknownInstrument)
R_BAD_TICK = int(_R.BadTick)
R_BAD_LOT = int(_R.BadLot)
R_QTY_OUT_OF_RANGE = int(_R.QtyOutOfRange)
R_PRICE_OUT_OF_RANGE = int(_R.PriceOutOfRange)
R_POST_ONLY_WOULD_TRADE = int(_R.PostOnlyWouldTrade)
R_FOK_UNFILLABLE = int(_R.FokUnfillable)
R_UNKNOWN_ORDER = int(_R.UnknownOrder)
R_NOT_YOUR_ORDER = int(_R.NotYourOrder)
R_INSTRUMENT_HALTED = int(_R.InstrumentHalted)
R_INSTRUMENT_CLOSED = int(_R.InstrumentClosed)
R_BOOK_FULL = int(_R.BookFull)
R_INVALID_SIDE = int(_R.InvalidSide)
R_INVALID_ORD_TYPE = int(_R.InvalidOrdType)
R_INVALID_TIF = int(_R.InvalidTimeInForce)
R_INVALID_STOP_PRICE = int(_R.InvalidStopPrice)
R_INVALID_DISPLAY_QTY = int(_R.InvalidDisplayQty)
R_INVALID_FLAGS = int(_R.InvalidFlags)
R_INVALID_STP_MODE = int(_R.InvalidStpMode)
R_UNKNOWN_ACCOUNT = int(_R.UnknownAccount)
R_DUPLICATE_INSTRUMENT = int(_R.DuplicateInstrument)
R_DUPLICATE_ACCOUNT = int(_R.DuplicateAccount)
R_INVALID_INSTRUMENT_DEFINITION = int(_R.InvalidInstrumentDefinition)
R_INSTRUMENT_CAPACITY = int(_R.InstrumentCapacity)
R_ACCOUNT_CAPACITY = int(_R.AccountCapacity)
R_INVALID_SCOPE = int(_R.InvalidScope)
R_UNSUPPORTED_MESSAGE = int(_R.UnsupportedMessage)
R_STOP_NOT_ALLOWED = int(_R.StopNotAllowed)
R_STOP_CAPACITY = int(_R.StopCapacity)
R_MAX_NOTIONAL = int(_R.MaxNotional)
R_MAX_OPEN_ORDERS = int(_R.MaxOpenOrders)
R_PRICE_BAND = int(_R.PriceBand)
R_KILL_ACCOUNT = int(_R.KillSwitchAccount)
R_KILL_SESSION = int(_R.KillSwitchSession)
R_KILL_INSTRUMENT = int(_R.KillSwitchInstrument)
R_KILL_EXCHANGE = int(_R.KillSwitchExchange)
R_KILL_CAPACITY = int(_R.KillSwitchCapacity)
R_INSUFFICIENT_FUNDS = int(_R.InsufficientFunds)
R_INSUFFICIENT_MARGIN = int(_R.InsufficientMargin)
R_MAX_ORDER_QTY = int(_R.MaxOrderQty)
R_POSITION_LIMIT = int(_R.PositionLimit)
R_REDUCE_ONLY = int(_R.ReduceOnlyWouldIncrease)
R_UNKNOWN_ASSET = int(_R.UnknownAsset)
R_NOT_PERPETUAL = int(_R.NotPerpetual)
R_INSTRUMENT_IN_USE = int(_R.InstrumentInUse)
R_INEXACT_NOTIONAL = int(_R.InexactNotional)
R_ACCOUNT_IN_DEBT = int(_R.AccountInDebt)

CXL_REDUCE_ONLY = int(_C.ReduceOnly)
CXL_LIQUIDATION = int(_C.Liquidation)
FUNDS_DEPOSIT = int(M.FundsAction.Deposit)
FUNDS_WITHDRAW = int(M.FundsAction.Withdraw)
_S = M.LiquidationStage
LIQ_START = int(_S.Start)
LIQ_BOOK_ORDER = int(_S.BookOrder)
LIQ_TAKEOVER = int(_S.InsuranceTakeover)
LIQ_ADL = int(_S.AutoDeleverage)
LIQ_INSURANCE_COVER = int(_S.InsuranceCover)
LIQ_FEE_COVER = int(_S.FeeCover)
LIQ_DONE = int(_S.Done)
LIQ_FEE = int(_S.LiquidationFee)

# -- inbound messages -----------------------------------------------------------------------
T_NEW_ORDER = M.NewOrder.template_id
T_CANCEL_ORDER = M.CancelOrder.template_id
T_REPLACE_ORDER = M.ReplaceOrder.template_id
T_MASS_CANCEL = M.MassCancel.template_id
T_INSTRUMENT_DEFINITION = M.InstrumentDefinition.template_id
T_CREATE_ACCOUNT = M.CreateAccount.template_id
T_FUNDS = M.Funds.template_id
T_INDEX_PRICE = M.IndexPrice.template_id
T_TRADING_STATUS = M.TradingStatusUpdate.template_id
T_KILL_SWITCH = M.KillSwitch.template_id
T_INSTRUMENT_LIMITS = M.InstrumentLimits.template_id
T_PERPETUAL_PARAMS = M.PerpetualParams.template_id

_L = M.NewOrder
NO_CLORD = word(_L, "clOrdId")
NO_PRICE = word(_L, "price")
NO_QTY = word(_L, "qty")
NO_DISPLAY = word(_L, "displayQty")
NO_STOP = word(_L, "stopPrice")
NO_SESSION = small(_L, "sessionId")
NO_ACCOUNT = small(_L, "account")
NO_INSTRUMENT = small(_L, "instrument")
NO_SIDE = small(_L, "side")
NO_ORD_TYPE = small(_L, "ordType")
NO_TIF = small(_L, "timeInForce")
NO_POST_ONLY = small(_L, "postOnly")
NO_REDUCE_ONLY = small(_L, "reduceOnly")
NO_STP = small(_L, "stpMode")

_L = M.CancelOrder
CO_CLORD = word(_L, "clOrdId")
CO_ORDER_ID = word(_L, "orderId")
CO_ORIG_CLORD = word(_L, "origClOrdId")
CO_SESSION = small(_L, "sessionId")
CO_ACCOUNT = small(_L, "account")
CO_INSTRUMENT = small(_L, "instrument")

_L = M.ReplaceOrder
RO_CLORD = word(_L, "clOrdId")
RO_ORDER_ID = word(_L, "orderId")
RO_ORIG_CLORD = word(_L, "origClOrdId")
RO_PRICE = word(_L, "price")
RO_QTY = word(_L, "qty")
RO_DISPLAY = word(_L, "displayQty")
RO_SESSION = small(_L, "sessionId")
RO_ACCOUNT = small(_L, "account")
RO_INSTRUMENT = small(_L, "instrument")

_L = M.MassCancel
MC_CLORD = word(_L, "clOrdId")
MC_SESSION = small(_L, "sessionId")
MC_ACCOUNT = small(_L, "account")
MC_INSTRUMENT = small(_L, "instrument")
MC_SCOPE = small(_L, "scope")

_L = M.InstrumentDefinition
ID_TICK = word(_L, "tickSize")
ID_LOT = word(_L, "lotSize")
ID_MIN_QTY = word(_L, "minQty")
ID_MAX_QTY = word(_L, "maxQty")
ID_REF_PRICE = word(_L, "referencePrice")
ID_SYMBOL = word(_L, "symbol")  # 8 ASCII bytes, kept as one word
ID_MAKER_FEE = small(_L, "makerFeePpm")
ID_TAKER_FEE = small(_L, "takerFeePpm")
ID_INSTRUMENT = small(_L, "instrument")
ID_KIND = small(_L, "kind")
ID_BASE_ASSET = small(_L, "baseAsset")
ID_HALT_POLICY = small(_L, "haltPolicy")
ID_STATUS = small(_L, "status")
if M.InstrumentDefinition.field("symbol").size != 8:
    raise SchemaError("InstrumentDefinition.symbol: the engine keeps the symbol as one 8-byte word")

_L = M.InstrumentLimits
IL_MAX_NOTIONAL = word(_L, "maxOrderNotional")
IL_NOTIONAL_DIV = word(_L, "notionalDivisor")
IL_CB_WINDOW = word(_L, "cbWindowNs")
IL_CB_HALT = word(_L, "cbHaltNs")
IL_INSTRUMENT = small(_L, "instrument")
IL_BAND_PPM = small(_L, "priceBandPpm")
IL_CB_MOVE_PPM = small(_L, "cbMovePpm")
IL_MAX_ORDER_QTY = word(_L, "maxOrderQty")
IL_MAX_POSITION = word(_L, "maxPosition")

_L = M.PerpetualParams
PP_TIER_NOTIONAL = word(_L, "tierNotional")
PP_FUND_INTERVAL = word(_L, "fundingIntervalNs")
PP_IMPACT = word(_L, "impactNotional")
PP_INSTRUMENT = small(_L, "instrument")
PP_IM = small(_L, "imPpm")
PP_MM = small(_L, "mmPpm")
PP_TIER_STEP = small(_L, "tierStepPpm")
PP_FUND_CAP = small(_L, "fundingCapPpm")
PP_BASIS_CAP = small(_L, "basisCapPpm")
PP_BASIS_EMA = small(_L, "basisEmaPpm")
PP_LIQ_FEE = small(_L, "liquidationFeePpm")
PP_INTEREST = small(_L, "interestPpm")

_L = M.CreateAccount
CA_ACCOUNT = small(_L, "account")
CA_STP = small(_L, "stpDefault")
CA_MAX_OPEN = small(_L, "maxOpenOrders")

FU_ACCOUNT = small(M.Funds, "account")
FU_AMOUNT = word(M.Funds, "amount")
FU_ASSET = small(M.Funds, "asset")
FU_ACTION = small(M.Funds, "action")
IX_INSTRUMENT = small(M.IndexPrice, "instrument")
IX_PRICE = word(M.IndexPrice, "price")
TS_INSTRUMENT = small(M.TradingStatusUpdate, "instrument")
TS_STATUS = small(M.TradingStatusUpdate, "status")
KS_ACCOUNT = small(M.KillSwitch, "account")
KS_INSTRUMENT = small(M.KillSwitch, "instrument")
KS_SESSION = small(M.KillSwitch, "sessionId")
KS_SCOPE = small(M.KillSwitch, "scope")
KS_ACTION = small(M.KillSwitch, "action")

# -- outbound events ------------------------------------------------------------------------
_L = M.OrderAccepted
H_ACCEPTED = header_word(_L)
OA_ORDER_ID = word(_L, "orderId")
OA_CLORD = word(_L, "clOrdId")
OA_PRICE = word(_L, "price")
OA_QTY = word(_L, "qty")
OA_DISPLAY = word(_L, "displayQty")
OA_STOP = word(_L, "stopPrice")
OA_SESSION = small(_L, "sessionId")
OA_ACCOUNT = small(_L, "account")
OA_INSTRUMENT = small(_L, "instrument")
OA_SIDE = small(_L, "side")
OA_ORD_TYPE = small(_L, "ordType")
OA_TIF = small(_L, "timeInForce")
OA_POST_ONLY = small(_L, "postOnly")
OA_REDUCE_ONLY = small(_L, "reduceOnly")

_L = M.OrderRejected
H_REJECTED = header_word(_L)
OR_CLORD = word(_L, "clOrdId")
OR_ORDER_ID = word(_L, "orderId")
OR_SESSION = small(_L, "sessionId")
OR_ACCOUNT = small(_L, "account")
OR_INSTRUMENT = small(_L, "instrument")
OR_REASON = small(_L, "reason")
OR_REF_TEMPLATE = small(_L, "refTemplateId")

_L = M.Trade
H_TRADE = header_word(_L)
TR_TRADE_ID = word(_L, "tradeId")
TR_PRICE = word(_L, "price")
TR_QTY = word(_L, "qty")
TR_MAKER_ORDER_ID = word(_L, "makerOrderId")
TR_MAKER_CLORD = word(_L, "makerClOrdId")
TR_MAKER_LEAVES = word(_L, "makerLeavesQty")
TR_TAKER_ORDER_ID = word(_L, "takerOrderId")
TR_TAKER_CLORD = word(_L, "takerClOrdId")
TR_TAKER_LEAVES = word(_L, "takerLeavesQty")
TR_INSTRUMENT = small(_L, "instrument")
TR_MAKER_ACCOUNT = small(_L, "makerAccount")
TR_MAKER_SESSION = small(_L, "makerSessionId")
TR_TAKER_ACCOUNT = small(_L, "takerAccount")
TR_TAKER_SESSION = small(_L, "takerSessionId")
TR_AGGRESSOR_SIDE = small(_L, "aggressorSide")

_L = M.OrderCanceled
H_CANCELED = header_word(_L)
OC_ORDER_ID = word(_L, "orderId")
OC_CLORD = word(_L, "clOrdId")
OC_QTY = word(_L, "canceledQty")
OC_SESSION = small(_L, "sessionId")
OC_ACCOUNT = small(_L, "account")
OC_INSTRUMENT = small(_L, "instrument")
OC_REASON = small(_L, "reason")

_L = M.OrderReplaced
H_REPLACED = header_word(_L)
RP_ORDER_ID = word(_L, "orderId")
RP_CLORD = word(_L, "clOrdId")
RP_ORIG_CLORD = word(_L, "origClOrdId")
RP_PRICE = word(_L, "price")
RP_QTY = word(_L, "qty")
RP_LEAVES = word(_L, "leavesQty")
RP_DISPLAY = word(_L, "displayQty")
RP_SESSION = small(_L, "sessionId")
RP_ACCOUNT = small(_L, "account")
RP_INSTRUMENT = small(_L, "instrument")

_L = M.CancelRejected
H_CANCEL_REJECTED = header_word(_L)
CR_ORDER_ID = word(_L, "orderId")
CR_CLORD = word(_L, "clOrdId")
CR_ORIG_CLORD = word(_L, "origClOrdId")
CR_SESSION = small(_L, "sessionId")
CR_ACCOUNT = small(_L, "account")
CR_INSTRUMENT = small(_L, "instrument")
CR_REASON = small(_L, "reason")
CR_REF_TEMPLATE = small(_L, "refTemplateId")

_L = M.StopTriggered
H_STOP_TRIGGERED = header_word(_L)
ST_ORDER_ID = word(_L, "orderId")
ST_CLORD = word(_L, "clOrdId")
ST_STOP_PRICE = word(_L, "stopPrice")
ST_TRIGGER_PRICE = word(_L, "triggerPrice")
ST_SESSION = small(_L, "sessionId")
ST_ACCOUNT = small(_L, "account")
ST_INSTRUMENT = small(_L, "instrument")

_L = M.MassCancelDone
H_MASS_DONE = header_word(_L)
MD_CLORD = word(_L, "clOrdId")
MD_COUNT = small(_L, "canceledCount")
MD_SESSION = small(_L, "sessionId")
MD_ACCOUNT = small(_L, "account")
MD_INSTRUMENT = small(_L, "instrument")
MD_SCOPE = small(_L, "scope")

_L = M.BookAdd
H_BOOK_ADD = header_word(_L)
BA_ORDER_ID = word(_L, "orderId")
BA_PRICE = word(_L, "price")
BA_QTY = word(_L, "qty")
BA_INSTRUMENT = small(_L, "instrument")
BA_SIDE = small(_L, "side")

_L = M.BookExecute
H_BOOK_EXECUTE = header_word(_L)
BE_ORDER_ID = word(_L, "orderId")
BE_QTY = word(_L, "qty")
BE_PRICE = word(_L, "price")
BE_TRADE_ID = word(_L, "tradeId")
BE_INSTRUMENT = small(_L, "instrument")

_L = M.BookReduce
H_BOOK_REDUCE = header_word(_L)
BR_ORDER_ID = word(_L, "orderId")
BR_QTY = word(_L, "qty")
BR_INSTRUMENT = small(_L, "instrument")

_L = M.BookDelete
H_BOOK_DELETE = header_word(_L)
BD_ORDER_ID = word(_L, "orderId")
BD_INSTRUMENT = small(_L, "instrument")

_L = M.BookReplace
H_BOOK_REPLACE = header_word(_L)
BP_ORDER_ID = word(_L, "orderId")
BP_PRICE = word(_L, "price")
BP_QTY = word(_L, "qty")
BP_INSTRUMENT = small(_L, "instrument")
BP_SIDE = small(_L, "side")

_L = M.InstrumentStatus
H_INSTRUMENT_STATUS = header_word(_L)
IS_INSTRUMENT = small(_L, "instrument")
IS_STATUS = small(_L, "status")

_L = M.KillSwitchStatus
H_KILL_STATUS = header_word(_L)
KT_ACCOUNT = small(_L, "account")
KT_SESSION = small(_L, "sessionId")
KT_INSTRUMENT = small(_L, "instrument")
KT_SCOPE = small(_L, "scope")
KT_ACTION = small(_L, "action")

_L = M.AdminResult
H_ADMIN_RESULT = header_word(_L)
AR_VALUE = word(_L, "value")
AR_ACCOUNT = small(_L, "account")
AR_INSTRUMENT = small(_L, "instrument")
AR_REF_TEMPLATE = small(_L, "refTemplateId")
AR_REASON = small(_L, "reason")

_L = M.MarkPrice
H_MARK_PRICE = header_word(_L)
MK_MARK = word(_L, "markPrice")
MK_INDEX = word(_L, "indexPrice")
MK_BASIS = word(_L, "basis")
MK_INSTRUMENT = small(_L, "instrument")

_L = M.FundingApplied
H_FUNDING = header_word(_L)
FA_MARK = word(_L, "markPrice")
FA_INDEX = word(_L, "indexPrice")
FA_REMAINDER = word(_L, "remainder")
FA_TOTAL = word(_L, "total")
FA_INSTRUMENT = small(_L, "instrument")
FA_RATE = small(_L, "ratePpm")

_L = M.Liquidation
H_LIQUIDATION = header_word(_L)
LQ_QTY = word(_L, "qty")
LQ_PRICE = word(_L, "price")
LQ_AMOUNT = word(_L, "amount")
LQ_EQUITY = word(_L, "equity")
LQ_REQUIREMENT = word(_L, "requirement")
LQ_ACCOUNT = small(_L, "account")
LQ_COUNTERPARTY = small(_L, "counterparty")
LQ_INSTRUMENT = small(_L, "instrument")
LQ_STAGE = small(_L, "stage")

# Words of an output row that any event can write: the rest of a row is zero from the buffer's
# allocation (np.zeros) and stays so, so an event zeroes only these (a slot is sized for the
# largest message, inbound or event).
EVENT_WORDS = max(-(-_layout.size // 8) for _layout in M.RING if _layout.template_id >= 100)
if EVENT_WORDS > SLOT_WORDS:
    raise SchemaError("an event is larger than a slot")

del _L, _C, _R, _S, _layout
