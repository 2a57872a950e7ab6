"""Lambda entry point for the saga's ``confirm_order`` task."""

from orders_saga.handlers._saga_task import saga_task_handler
from orders_saga.logic.saga.confirm_order import confirm_order

handler = saga_task_handler(confirm_order)
