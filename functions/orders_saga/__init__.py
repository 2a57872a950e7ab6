"""The service's function code: one asset, one handler module per Lambda function.

Layers: ``handlers`` (thin: parse, call logic, respond), ``logic`` (business decisions and the
idempotency boundary), ``adapters`` (PostgreSQL, payment provider, SQS, Step Functions).
"""
