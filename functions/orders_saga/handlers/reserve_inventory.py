"""Lambda entry point for the saga's ``reserve_inventory`` task."""

from orders_saga.handlers._saga_task import saga_task_handler
from orders_saga.logic.saga.reserve_inventory import reserve_inventory

handler = saga_task_handler(reserve_inventory)
