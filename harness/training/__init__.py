"""The training engine: one loop for every method, a matched budget, exact resume, honest accounting."""

from harness.training.accounting import Accounting
from harness.training.budget import TrainPlan, plan_training
from harness.training.trainer import TrainResult, load_trained_weights, train

__all__ = ["Accounting", "TrainPlan", "TrainResult", "load_trained_weights", "plan_training", "train"]
