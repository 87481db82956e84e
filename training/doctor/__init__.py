"""The doctor: checks that catch most training bugs in minutes, before the long run.

    python -m training.doctor                       # the trainer's config: lenet5 on digits
    report = training.doctor.examine(model, (x_train, y_train), (x_val, y_val))
    print(report.table())

The checks follow the well-known recipe for training neural networks: look at the data, check
the initial loss, overfit one batch, check that a short run learns, find a learning rate, watch
activations and gradients, watch for NaN. See `CHECKS`.
"""

from training.doctor.examine import CHECKS, examine
from training.doctor.report import Report, Result
from training.doctor.session import Budget

__all__ = ["CHECKS", "Budget", "Report", "Result", "examine"]
