"""Lambda entry point for the saga's ``refund_payment`` task."""

from orders_saga import config
from orders_saga.handlers._saga_task import PAYMENT_CALLS, saga_task_handler
from orders_saga.logic.saga.refund_payment import refund_payment

handler = saga_task_handler(
    refund_payment, settings=(config.payment_settings,), calls=PAYMENT_CALLS
)
