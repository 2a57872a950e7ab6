"""Lambda entry point for the saga's ``release_inventory`` task."""

from orders_saga.handlers._saga_task import saga_task_handler
from orders_saga.logic.saga.release_inventory import release_inventory

handler = saga_task_handler(release_inventory)
