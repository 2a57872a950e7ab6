"""The price table of the cost model (benchmarks/cost.py): us-east-1, on-demand list prices.

One constant per price, in US dollars per the unit its name says, each with where it was
checked. Free tiers are left out on purpose (they are per account, and an account that runs
other workloads has used them up): the model errs towards the bill being higher, not lower.
Prices checked with the search tool on PRICES_CHECKED; a line marked "unverified here" is the
best known value that no stored source confirmed, and is listed in UNVERIFIED so the report
can flag every line that uses it. Re-check them all before quoting a number to anybody, in
the AWS Pricing Calculator (https://calculator.aws/).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

PRICES_CHECKED: Final = "2026-12-05"
REGION: Final = "us-east-1"
HOURS_PER_MONTH: Final = 730  # the AWS Pricing Calculator's month
SECONDS_PER_MONTH: Final = HOURS_PER_MONTH * 3600
GB: Final = 1e9  # AWS bills logs, NAT and endpoint bytes per GB

# -- AWS Step Functions: https://aws.amazon.com/step-functions/pricing/ ------------------------
# Standard: $0.025 per 1,000 state transitions, retries included (aws.amazon.com/step-functions/
# pricing/, the Compute Blog "Building cost-effective AWS Step Functions workflows").
SFN_STANDARD_TRANSITION: Final = 0.025 / 1000
# Express: $1.00 per million requests (same Compute Blog post: "$1.00 per million invocations").
SFN_EXPRESS_REQUEST: Final = 1.00 / 1e6
# Express duration per GB-second, billed in 100 ms steps and 64 MB chunks (pricing page). First
# tier $0.00001667 (wring.co pricing guide; the Step Functions workshop's "$0.0000001042 per
# 100 ms" at 64 MB is the same rate). Tiers are per account and month, in GB-hours.
SFN_EXPRESS_GB_SECOND_TIERS: Final = (
    (1_000.0, 0.00001667),  # first 1,000 GB-hours
    (4_000.0, 0.00000833),  # next 4,000 GB-hours: unverified here
    (float("inf"), 0.00000456),  # beyond: unverified here
)
SFN_EXPRESS_MEMORY_CHUNK_MB: Final = 64
SFN_EXPRESS_DURATION_STEP_MS: Final = 100
SFN_EXPRESS_MAX_DURATION_S: Final = 300  # 5 minutes (Compute Blog post above)

# -- AWS Lambda: https://aws.amazon.com/lambda/pricing/ ----------------------------------------
LAMBDA_REQUEST: Final = 0.20 / 1e6  # cloudchipr.com and kodekloud Lambda pricing summaries
# Duration per GB-second, first tier (7.5 B GB-s arm64, 6 B x86 per month): cloudchipr.com
# "AWS Lambda ARM vs x86 Pricing" (us-east-1); artillery's prices.js has the same base rates.
LAMBDA_GB_SECOND: Final[Mapping[str, float]] = MappingProxyType(
    {"arm64": 0.0000133334, "x86_64": 0.0000166667}
)
# Provisioned concurrency (configured GB-seconds) and the duration of invocations it serves.
# x86 $0.0000041667 / $0.0000097222; arm64 is 80 % of x86 like on-demand: unverified here.
LAMBDA_PC_GB_SECOND: Final[Mapping[str, float]] = MappingProxyType(
    {"arm64": 0.0000033334, "x86_64": 0.0000041667}
)
LAMBDA_PC_DURATION_GB_SECOND: Final[Mapping[str, float]] = MappingProxyType(
    {"arm64": 0.0000077778, "x86_64": 0.0000097222}
)

# -- Amazon API Gateway: https://aws.amazon.com/api-gateway/pricing/ ---------------------------
# REST API, first 333 M requests a month: $3.50 per million (AWS whitepaper "Best Practices for
# Designing Amazon API Gateway Private APIs", Table 4).
APIGW_REST_REQUEST: Final = 3.50 / 1e6

# -- AWS WAF: https://aws.amazon.com/waf/pricing/ ----------------------------------------------
WAF_WEB_ACL_MONTH: Final = 5.00  # c3x.dev "AWS WAF cost explained"; awsnegotiations.com
WAF_RULE_MONTH: Final = 1.00  # per rule or managed rule group (same sources)
WAF_REQUEST: Final = 0.60 / 1e6  # per request inspected (same sources)

# -- Amazon SQS: https://aws.amazon.com/sqs/pricing/ -------------------------------------------
SQS_REQUEST: Final = 0.40 / 1e6  # standard queue, per 64 KB chunk (cloudburn.io SQS guide)
# Lambda's SQS event source mapping long-polls (20 s) with 5 pollers while the queue is empty:
# an AWS behaviour, not a price; our assumption, not confirmed here.
SQS_ESM_IDLE_POLLERS: Final = 5
SQS_LONG_POLL_WAIT_S: Final = 20

# -- Amazon DynamoDB on demand: https://aws.amazon.com/dynamodb/pricing/on-demand/ -------------
# After the 1 November 2024 on-demand price cut (50 %): airbyte.com "Amazon DynamoDB Pricing".
DYNAMODB_WRITE_UNIT: Final = 0.625 / 1e6  # per write request unit (1 KB)
DYNAMODB_READ_UNIT: Final = 0.125 / 1e6  # per read request unit (4 KB, strongly consistent)

# -- Amazon CloudWatch: https://aws.amazon.com/cloudwatch/pricing/ -----------------------------
LOGS_INGEST_GB: Final = 0.50  # c3x.dev, hykell.com: $0.50 per GB ingested (us-east-1)
LOGS_STORAGE_GB_MONTH: Final = 0.03  # same sources; charged here on ingested (not compressed) GB
ALARM_METRIC_MONTH: Final = 0.10  # standard resolution, per alarm metric (c3x.dev)
ALARM_HIGH_RES_METRIC_MONTH: Final = 0.30  # period below 60 s (c3x.dev)
DASHBOARD_MONTH: Final = 3.00  # c3x.dev "CloudWatch custom metrics cost"
CUSTOM_METRIC_MONTH: Final = 0.30  # first 10,000 metrics (c3x.dev; calculator.city)

# -- AWS X-Ray: https://aws.amazon.com/xray/pricing/ -------------------------------------------
XRAY_TRACE_RECORDED: Final = 5.00 / 1e6  # aws.amazon.com/de/xray/pricing ($0.000005 each)
# The default sampling rule when the template defines none: 1 trace a second, then 5 %.
XRAY_DEFAULT_RESERVOIR_PER_S: Final = 1.0
XRAY_DEFAULT_FIXED_RATE: Final = 0.05

# -- Amazon VPC: https://aws.amazon.com/vpc/pricing/ -------------------------------------------
NAT_GATEWAY_HOUR: Final = 0.045  # cloudburn.io, basavytix.com: us-east-1
NAT_GATEWAY_GB: Final = 0.045  # data processed, either direction (same sources)
PUBLIC_IPV4_HOUR: Final = 0.005  # since 1 Feb 2024 (AWS Networking blog; doit.com)
# https://aws.amazon.com/privatelink/pricing/: per endpoint per AZ hour (cloudcostkit.com
# calculator: 4,378 endpoint-hours = $43.78) and per GB processed (first PB).
INTERFACE_ENDPOINT_AZ_HOUR: Final = 0.01
INTERFACE_ENDPOINT_GB: Final = 0.01
DATA_TRANSFER_OUT_GB: Final = 0.09  # to the internet, first 10 TB (1debit alterNAT README)

# -- Amazon RDS for PostgreSQL: https://aws.amazon.com/rds/postgresql/pricing/ -----------------
# Single-AZ instance hour; Multi-AZ (one standby) bills both instances (RDS User Guide
# "On-Demand DB instances": "Billed per DB instance-hour for both the primary and standby").
RDS_INSTANCE_HOUR: Final[Mapping[str, float]] = MappingProxyType(
    {
        "db.t4g.small": 0.032,  # infratally.com "AWS RDS pricing explained 2026"
        "db.r7g.large": 0.239,  # unverified here (README's "about $0.24/h")
    }
)
# vCPUs per class: what RDS Proxy bills for.
RDS_INSTANCE_VCPUS: Final[Mapping[str, int]] = MappingProxyType(
    {"db.t4g.small": 2, "db.r7g.large": 2}
)
# Storage per GB-month, Single-AZ; Multi-AZ pays it for primary and standby (User Guide above).
RDS_STORAGE_GB_MONTH: Final[Mapping[str, float]] = MappingProxyType(
    {
        "gp3": 0.115,  # usage.ai RDS pricing calculator guide
        "gp2": 0.115,  # unverified here (same list price as gp3 in us-east-1)
    }
)
# RDS Proxy: per vCPU of the database instance per hour, at least 2 vCPUs: unverified here.
RDS_PROXY_VCPU_HOUR: Final = 0.015
RDS_PROXY_MIN_VCPUS: Final = 2

# -- Keys and secrets --------------------------------------------------------------------------
KMS_KEY_MONTH: Final = 1.00  # aws.amazon.com/kms/pricing: per customer managed key
SECRET_MONTH: Final = 0.40  # https://aws.amazon.com/secrets-manager/pricing/ (hivebook.wiki)
SECRETS_API_CALL: Final = 0.05 / 10_000  # same page and source: $0.05 per 10,000 API calls

# Every constant above that no stored source confirmed; the report flags the lines using them.
UNVERIFIED: Final = frozenset(
    {
        "SFN_EXPRESS_GB_SECOND_TIERS[2..3]",
        "LAMBDA_PC_GB_SECOND[arm64]",
        "LAMBDA_PC_DURATION_GB_SECOND[arm64]",
        "SQS_ESM_IDLE_POLLERS",
        "RDS_INSTANCE_HOUR[db.r7g.large]",
        "RDS_STORAGE_GB_MONTH[gp2]",
        "RDS_PROXY_VCPU_HOUR",
    }
)
