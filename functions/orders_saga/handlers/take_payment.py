"""Lambda entry point for the saga's ``take_payment`` task."""

from orders_saga import config
from orders_saga.handlers._saga_task import PAYMENT_CALLS, saga_task_handler
from orders_saga.logic.saga.take_payment import take_payment

handler = saga_task_handler(take_payment, settings=(config.payment_settings,), calls=PAYMENT_CALLS)
