"""A first deploy that works in a fresh account and can be retried after a failure
(issue 10, finding 6)."""

from __future__ import annotations

from tests.infra.conftest import Synthesized


def test_the_master_secret_is_not_rotated_while_migrate_reads_it(stage_stack: Synthesized) -> None:
    """The rotation schedule would rotate the master secret at creation (CloudFormation's
    RotateImmediatelyOnUpdate defaults to true) while the Migrate trigger logs in with it.

    Fails if: infra/data.py drops rotate_immediately_on_update=False, or the Migrate trigger
    stops waiting for the rotation schedule."""
    ((rotation_id, rotation),) = stage_stack.resources(
        "AWS::SecretsManager::RotationSchedule"
    ).items()
    triggers = list(stage_stack.resources("Custom::Trigger").values())

    assert rotation["Properties"]["RotateImmediatelyOnUpdate"] is False
    assert triggers
    for trigger in triggers:
        assert rotation_id in trigger.get("DependsOn", [])
