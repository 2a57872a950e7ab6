"""PostgreSQL behind RDS Proxy (F06, F14), and the Migrate trigger that shapes its schema."""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack, triggers
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import StageConfig
from infra.functions import FunctionAssets, HardenedFunction
from infra.nag import acknowledge
from infra.network import DATABASE_SUBNETS, FUNCTION_SUBNETS

MASTER_USER = "orders_admin"
# CA bundles shipped in the code asset (functions/orders_saga/certs, ADR 0008): the functions
# pass them as sslrootcert, since Lambda has no trust store psycopg's OpenSSL would find.
PROXY_CA_BUNDLE = "amazon-root-cas.pem"
RDS_CA_BUNDLE = "rds-ca-bundle.pem"
LOG_EXPORTS = ("postgresql", "upgrade")
# Excluded from generated passwords: characters that break connection strings or shells.
# (S105 is silenced below: a set of excluded characters, not a password.)
PASSWORD_EXCLUDE = " %+~`#$&*()|[]{}:;<>?!'/@\"\\"  # noqa: S105


def retained_unless_create_fails(policy: RemovalPolicy) -> RemovalPolicy:
    """Issue 10, finding 5/6: Retain keeps a resource even when the stack's first create rolls
    back, and a fixed name then makes the retried deploy fail ("already exists").
    RetainExceptOnCreate keeps it on delete and replacement only."""
    return RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE if policy == RemovalPolicy.RETAIN else policy


class Database(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        vpc: ec2.IVpc,
        assets: FunctionAssets,
    ) -> None:
        super().__init__(scope, construct_id)
        self._config = config
        db = config.db
        # A fixed identifier lets us create the exported log groups (with retention) before
        # the instance: otherwise RDS creates them first and CDK needs a log-retention
        # custom-resource Lambda to set their retention afterwards.
        identifier = f"{config.service}-{config.name}"
        log_groups = [
            logs.LogGroup(
                self,
                f"Logs{export.capitalize()}",
                log_group_name=f"/aws/rds/instance/{identifier}/{export}",
                retention=config.log_retention,
                removal_policy=retained_unless_create_fails(config.removal_policy),
            )
            for export in LOG_EXPORTS
        ]
        self.instance = rds.DatabaseInstance(
            self,
            "Instance",
            engine=rds.DatabaseInstanceEngine.postgres(
                version=rds.PostgresEngineVersion.of(
                    db.engine_full_version, db.engine_major_version
                )
            ),
            # F16: what is tested is what runs; minor upgrades go through config.
            auto_minor_version_upgrade=False,
            allow_major_version_upgrade=False,
            instance_type=ec2.InstanceType(db.instance_type),
            vpc=vpc,
            vpc_subnets=DATABASE_SUBNETS,
            publicly_accessible=False,
            multi_az=db.multi_az,
            storage_encrypted=True,
            allocated_storage=db.allocated_storage_gb,
            max_allocated_storage=db.max_allocated_storage_gb,
            database_name=db.database_name,
            port=db.port,
            credentials=rds.Credentials.from_generated_secret(
                MASTER_USER, exclude_characters=PASSWORD_EXCLUDE
            ),
            iam_authentication=True,
            ca_certificate=rds.CaCertificate.RDS_CA_RSA2048_G1,
            parameters={
                # F07: a server-side bound as well, for sessions that forget to set one.
                "statement_timeout": str(db.statement_timeout_ms),
                "rds.force_ssl": "1",
                "log_min_duration_statement": str(db.statement_timeout_ms // 5),
            },
            instance_identifier=identifier,
            cloudwatch_logs_exports=list(LOG_EXPORTS),
            enable_performance_insights=True,
            deletion_protection=db.deletion_protection,
            backup_retention=Duration.days(db.backup_retention_days),
            delete_automated_backups=False,
            copy_tags_to_snapshot=True,
            removal_policy=db.removal_policy,
        )
        for log_group in log_groups:
            self.instance.node.add_dependency(log_group)
        self._acknowledge_findings()
        secret = self.instance.secret
        assert secret is not None  # from_generated_secret always creates one
        self.master_secret: secretsmanager.ISecret = secret

        # F14: rotation by the Secrets Manager hosted function; it talks to the instance
        # directly (not through the proxy), so it gets its own security group.
        rotation_sg = ec2.SecurityGroup(
            self, "RotationSecurityGroup", vpc=vpc, description="master secret rotation"
        )
        self.instance.connections.allow_default_port_from(rotation_sg, "secret rotation")
        self.rotation = secret.add_rotation_schedule(
            "Rotation",
            automatically_after=Duration.days(db.rotation_days),
            # Issue 10, finding 6: no rotation at creation. Rotating immediately races the
            # Migrate trigger, which reads this secret: it could log in with a password the
            # instance no longer accepts (or the rotation's finishSecret could fail under it)
            # and roll back the first deploy. The first rotation runs after rotation_days.
            rotate_immediately_on_update=False,
            hosted_rotation=secretsmanager.HostedRotation.postgre_sql_single_user(
                vpc=vpc,
                vpc_subnets=FUNCTION_SUBNETS,
                security_groups=[rotation_sg],
                exclude_characters=PASSWORD_EXCLUDE,
            ),
        )

        # F06: the proxy pools connections; IAM tokens (fresh per connect, F14) and TLS only.
        self.proxy = self.instance.add_proxy(
            "Proxy",
            vpc=vpc,
            vpc_subnets=DATABASE_SUBNETS,
            # End-to-end IAM: clients present an IAM token (fresh per connect, F14) and the proxy
            # uses IAM to reach PostgreSQL as the same user, so no per-user secret exists to
            # rotate or leak; the app user only needs the rds_iam role (migration 0002).
            default_auth_scheme=rds.DefaultAuthScheme.IAM_AUTH,
            iam_auth=True,
            require_tls=True,
            max_connections_percent=db.proxy_max_connections_percent,
            max_idle_connections_percent=db.proxy_max_idle_connections_percent,
            borrow_timeout=Duration.seconds(db.proxy_borrow_timeout_s),
            debug_logging=False,
        )

        # End-to-end IAM: the proxy itself logs in to PostgreSQL with IAM as the app user, so
        # its role needs rds-db:connect for exactly that user on this instance (F20).
        proxy_role = self.proxy.node.find_child("IAMRole")
        assert isinstance(proxy_role, iam.Role)
        proxy_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["rds-db:connect"],
                resources=[
                    Stack.of(self).format_arn(
                        service="rds-db",
                        resource="dbuser",
                        resource_name=f"{self.instance.instance_resource_id}/{db.app_user}",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )

        # Migrate: master credentials (it creates the app role and its rds_iam grant), run by
        # a CDK trigger once the proxy exists, on every deploy where its code changed. It talks
        # to the instance directly: the proxy only speaks IAM, and DDL should not hold a
        # pinned proxy connection.
        self.migrate = HardenedFunction(
            self,
            "Migrate",
            config=config,
            assets=assets,
            vpc=vpc,
            vpc_subnets=FUNCTION_SUBNETS,
            environment={
                **self.environment(auth="secret", user=MASTER_USER, secret_arn=secret.secret_arn),
                "DB_HOST": self.instance.db_instance_endpoint_address,
                # The instance presents an RDS CA certificate, which no system store holds.
                "DB_SSLROOTCERT": RDS_CA_BUNDLE,
                # The role Migrate configures for the service functions (statement_timeout).
                "DB_APP_USER": config.db.app_user,
            },
        )
        self.instance.connections.allow_default_port_from(self.migrate.function, "migrations")
        # F20: GetSecretValue only (grant_read adds DescribeSecret, which Migrate never calls).
        iam.Grant.add_to_principal(
            grantee=self.migrate.function,
            actions=["secretsmanager:GetSecretValue"],
            resource_arns=[secret.secret_arn],
        )
        self.migrate_trigger = triggers.Trigger(
            self,
            "MigrateTrigger",
            handler=self.migrate.function,
            # After the rotation schedule too: Migrate reads the secret it manages.
            execute_after=[self.proxy, self.instance, self.rotation],
            execute_on_handler_change=True,
            invocation_type=triggers.InvocationType.REQUEST_RESPONSE,
            timeout=config.function("Migrate").timeout,
        )

    def _acknowledge_findings(self) -> None:
        db = self._config.db
        reasons = {
            "AwsSolutions-RDS11": "clients reach PostgreSQL only through RDS Proxy (always port "
            "5432) from inside the VPC; a non-default instance port hides nothing from them",
        }
        if not db.multi_az:
            reasons["AwsSolutions-RDS3"] = (
                f"{self._config.name}: single-AZ by StageConfig to halve cost; this stage holds "
                "no customer data and is rebuilt from migrations"
            )
        if not db.deletion_protection:
            reasons["AwsSolutions-RDS10"] = (
                f"{self._config.name}: the stack is torn down and rebuilt freely; deletion "
                "protection is a StageConfig flag, on where data matters"
            )
        acknowledge(self.instance, reasons)

    def environment(
        self, *, auth: str = "iam", user: str | None = None, secret_arn: str | None = None
    ) -> dict[str, str]:
        """DB_* variables of docs/architecture.md for a function that connects via the proxy."""
        db = self._config.db
        env = {
            "DB_HOST": self.proxy.endpoint,
            "DB_PORT": str(db.port),
            "DB_NAME": db.database_name,
            "DB_USER": user or db.app_user,
            "DB_AUTH": auth,
            "DB_SSLMODE": "verify-full",
            # RDS Proxy presents an ACM certificate: the Amazon roots verify it (ADR 0008).
            "DB_SSLROOTCERT": PROXY_CA_BUNDLE,
            "DB_CONNECT_TIMEOUT_S": str(db.connect_timeout_s),
            "DB_STATEMENT_TIMEOUT_MS": str(db.statement_timeout_ms),
        }
        if secret_arn is not None:
            env["DB_SECRET_ARN"] = secret_arn
        return env

    def allow_from(self, fn: HardenedFunction) -> None:
        """Network path function -> proxy (the function's egress and the proxy's ingress)."""
        self.proxy.connections.allow_from(
            fn.function, ec2.Port.tcp(self._config.db.port), fn.logical_name
        )

    def grant_connect(self, fn: HardenedFunction, db_user: str | None = None) -> None:
        """F20: rds-db:connect for exactly one database user, plus the network path."""
        self.allow_from(fn)
        self.proxy.grant_connect(fn.function, db_user or self._config.db.app_user)

    @property
    def migrate_function(self) -> lambda_.IFunction:
        return self.migrate.function
