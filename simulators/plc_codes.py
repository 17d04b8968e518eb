"""The integer codes the simulated PLCs (Modbus and S7) serve for execution and controller
mode.

Why one table: both simulated PLCs stand for the same kind of controller program, and a
plant YAML `map:` written for one (0 ready, 1 active, ...; 0 automatic, 1 manual, ...) must
read the other the same way; two copies could drift apart without any test noticing.
"""

from __future__ import annotations

from models.machine_state import ControllerMode, Execution

EXECUTION_CODES: dict[Execution, int] = {
    Execution.READY: 0, Execution.ACTIVE: 1, Execution.INTERRUPTED: 2, Execution.FEED_HOLD: 3,
    Execution.STOPPED: 4, Execution.PROGRAM_STOPPED: 5, Execution.PROGRAM_COMPLETED: 6,
    Execution.WAIT: 7, Execution.OPTIONAL_STOP: 8,
}
MODE_CODES: dict[ControllerMode, int] = {
    ControllerMode.AUTOMATIC: 0, ControllerMode.MANUAL: 1, ControllerMode.MDI: 2,
    ControllerMode.EDIT: 3, ControllerMode.SEMI_AUTOMATIC: 4,
}
