"""Lambda entry point for the saga's ``mark_order_failed`` task."""

from orders_saga.handlers._saga_task import saga_task_handler
from orders_saga.logic.saga.mark_order_failed import mark_order_failed

handler = saga_task_handler(mark_order_failed)
