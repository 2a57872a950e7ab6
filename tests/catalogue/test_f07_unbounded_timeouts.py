"""F07 Unbounded timeouts: every hop has an explicit timeout, and the outer one outlasts the
inner one."""

from __future__ import annotations

from infra.config import VISIBILITY_TIMEOUT_FACTOR, saga_execution_timeout_s
from tests.catalogue.templates import Saga, our_functions, resources
from tests.infra.conftest import Synthesized

AWS_SDK_TIMEOUTS = ("AWS_CONNECT_TIMEOUT_S", "AWS_READ_TIMEOUT_S")
DB_TIMEOUTS = ("DB_CONNECT_TIMEOUT_S", "DB_STATEMENT_TIMEOUT_MS")
PAYMENT_TIMEOUTS = ("PAYMENT_CONNECT_TIMEOUT_S", "PAYMENT_READ_TIMEOUT_S")


def test_f07_every_task_outlasts_its_lambda_and_the_execution_has_the_computed_timeout(
    stage_stack: Synthesized,
) -> None:
    """Given the saga definition, then every Task has TimeoutSeconds, a Lambda task's is at least
    its function's Timeout, and the execution's TimeoutSeconds is saga_execution_timeout_s.

    Fails if: `task_timeout` is dropped from a task, task_timeout_s is set below a step's
    Lambda timeout, or the state machine's `timeout` stops using saga_execution_timeout.
    """
    saga = Saga(stage_stack)
    res = resources(stage_stack)
    tasks = [(name, state) for name, state in saga.states() if state["Type"] == "Task"]
    lambda_tasks = saga.lambda_tasks()

    assert tasks
    assert lambda_tasks
    for name, state in tasks:
        assert isinstance(state.get("TimeoutSeconds"), int), name
    for name, state, fn in lambda_tasks:
        assert state["TimeoutSeconds"] >= res.props(fn)["Timeout"], name
    assert saga.definition["TimeoutSeconds"] == saga_execution_timeout_s(stage_stack.config)


def test_f07_every_function_timeout_is_its_configured_one(stage_stack: Synthesized) -> None:
    """Given our functions, then each Timeout is set and does not exceed its FunctionSettings.

    Fails if: `timeout=settings.timeout` is dropped (CloudFormation's default is 3 s, CDK's
    may differ) or a function's timeout is raised in the template only.
    """
    functions = our_functions(stage_stack)
    assert functions
    for name, (_, props) in functions.items():
        assert isinstance(props.get("Timeout"), int), name
        assert props["Timeout"] <= stage_stack.config.function(name).timeout_s, name


def test_f07_consumed_queue_visibility_covers_six_consumer_timeouts(
    stage_stack: Synthesized,
) -> None:
    """Given every SQS mapping, then its queue's VisibilityTimeout >= 6 x the consumer Timeout.

    Fails if: the queue's `visibility_timeout` stops being derived from Intake's timeout
    (redelivery while a slow batch still holds the message).
    """
    res = resources(stage_stack)
    mappings = list(res.of_type("AWS::Lambda::EventSourceMapping"))
    assert mappings
    for logical_id, props in mappings:
        fn = res.function_of(props["FunctionName"])
        (queue,) = res.referenced(props["EventSourceArn"], "AWS::SQS::Queue")
        assert fn is not None, logical_id
        visibility = res.props(queue)["VisibilityTimeout"]
        assert visibility >= VISIBILITY_TIMEOUT_FACTOR * res.props(fn)["Timeout"], queue
        assert VISIBILITY_TIMEOUT_FACTOR >= 6


def test_f07_function_env_bounds_every_dependency_call(stage_stack: Synthesized) -> None:
    """Given each function's environment, then AWS SDK, database and payment timeouts are set
    for the dependencies it has, positive, and one attempt of each fits in the function's
    own Timeout.

    Fails if: infra/functions.py stops passing one of the *_TIMEOUT_* variables (the code's
    defaults would then apply silently), or a timeout is raised past the function timeout.
    """
    for name, (_, props) in our_functions(stage_stack).items():
        env = props["Environment"]["Variables"]
        timeout_s = props["Timeout"]
        required = list(AWS_SDK_TIMEOUTS)
        if "DB_HOST" in env:
            required += DB_TIMEOUTS
        if "PAYMENT_API_URL" in env:
            required += PAYMENT_TIMEOUTS
        for variable in required:
            assert float(env.get(variable, "0")) > 0, (name, variable)
        assert sum(float(env[v]) for v in AWS_SDK_TIMEOUTS) < timeout_s, name
        if "DB_HOST" in env:
            db_s = float(env["DB_CONNECT_TIMEOUT_S"]) + float(env["DB_STATEMENT_TIMEOUT_MS"]) / 1000
            assert db_s < timeout_s, name
        if "PAYMENT_API_URL" in env:
            assert sum(float(env[v]) for v in PAYMENT_TIMEOUTS) < timeout_s, name
    payers = [
        n
        for n, (_, p) in our_functions(stage_stack).items()
        if "PAYMENT_API_URL" in p["Environment"]["Variables"]
    ]
    assert sorted(payers) == ["RefundPayment", "TakePayment"]
