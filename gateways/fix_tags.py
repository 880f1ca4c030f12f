"""FIX 4.4 tag numbers the gateway's order mapping reads and writes, by name (one home for
``fix_orders``, ``fix_new_order`` and ``fix_instrument``; the session layer's header and
trailer tags live with the dictionary, ``fix_dictionary``). Numbers from the FIX 4.4
specification's field list; ``T_STP_MODE`` (7928) is a user-defined tag (5000-9999)."""

from __future__ import annotations

T_ACCOUNT = 1
T_AVG_PX = 6
T_CL_ORD_ID = 11
T_CUM_QTY = 14
T_EXEC_ID = 17
T_EXEC_INST = 18
T_LAST_PX = 31
T_LAST_QTY = 32
T_ORDER_ID = 37
T_ORDER_QTY = 38
T_ORD_STATUS = 39
T_ORD_TYPE = 40
T_ORIG_CL_ORD_ID = 41
T_PRICE = 44
T_SIDE = 54
T_SYMBOL = 55
T_TEXT = 58
T_TIF = 59
T_TRANSACT_TIME = 60
T_STOP_PX = 99
T_CXL_REJ_REASON = 102
T_ORD_REJ_REASON = 103
T_MAX_FLOOR = 111
T_EXEC_TYPE = 150
T_LEAVES_QTY = 151
T_REF_MSG_TYPE = 372
T_EXEC_RESTATEMENT_REASON = 378
T_BIZ_REJECT_REF_ID = 379
T_BIZ_REJECT_REASON = 380
T_CXL_REJ_RESPONSE_TO = 434
T_SECONDARY_EXEC_ID = 527
T_MASS_TYPE = 530
T_MASS_RESPONSE = 531
T_MASS_REJECT_REASON = 532
T_AFFECTED = 533
T_ORD_STATUS_REQ_ID = 790
T_LAST_LIQUIDITY_IND = 851
T_STP_MODE = 7928
