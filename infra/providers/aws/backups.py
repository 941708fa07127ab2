"""Backups: an S3 bucket for the data nodes' dumps, and daily EBS snapshots of the data volumes.

The data nodes may only add objects to the bucket: a compromised node can neither read the
backups (they hold every item) nor delete them. Versioning keeps an overwritten dump, and the
lifecycle rules expire everything after the retention period.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.config import StackConfig
from infra.providers.aws.roles import InstanceRole, assumed_by, policy

# The tag that the snapshot policy selects: the data volumes of this stack and nothing else
# (a lifecycle policy targets resources carrying *any* of its tags).
SNAPSHOT_TAG = "snapshots"
# AWS's managed policy for Data Lifecycle Manager: create and delete snapshots.
DLM_POLICY = "policy/service-role/AWSDataLifecycleManagerServiceRole"


class BackupBucket(pulumi.ComponentResource):
    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("microservices:aws:BackupBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(
            name,
            bucket_prefix=f"{config.project}-{config.stack}-backups-",
            force_destroy=not config.production,
            tags=config.base_tags(),
            opts=pulumi.ResourceOptions(parent=self, protect=config.production),
        )
        bucket = self.bucket.id
        aws.s3.BucketPublicAccessBlock(
            name,
            bucket=bucket,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            name,
            bucket=bucket,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            name,
            bucket=bucket,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=child,
        )
        versioning = aws.s3.BucketVersioning(
            name,
            bucket=bucket,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        days = config.backup_retention_days
        aws.s3.BucketLifecycleConfiguration(
            name,
            bucket=bucket,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-backups",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=days),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=days
                    ),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=1
                    ),
                )
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        aws.s3.BucketPolicy(
            name,
            bucket=bucket,
            policy=self.bucket.arn.apply(
                lambda arn: policy(
                    {
                        "Sid": "TLSOnly",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [arn, f"{arn}/*"],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                )
            ),
            opts=child,
        )
        self.writer = InstanceRole(
            f"{name}-writer",
            config,
            self.bucket.arn.apply(
                lambda arn: policy(
                    {
                        "Effect": "Allow",
                        "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                        "Resource": f"{arn}/*",
                    }
                )
            ),
            "write backups to the stack's bucket (no read, no delete)",
            opts=child,
        )
        self.register_outputs({"bucket": bucket})


class Snapshots(pulumi.ComponentResource):
    """A Data Lifecycle Manager policy: a daily snapshot of every volume tagged for it, kept
    `snapshot_retention_count` days."""

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("microservices:aws:Snapshots", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.tag = {SNAPSHOT_TAG: f"{config.project}-{config.stack}-data"}
        role = aws.iam.Role(
            name,
            assume_role_policy=assumed_by("dlm.amazonaws.com"),
            description=f"{config.stack}: Data Lifecycle Manager snapshots of the data volumes",
            tags=config.base_tags(),
            opts=child,
        )
        partition = aws.get_partition_output().partition
        aws.iam.RolePolicyAttachment(
            name, role=role.name, policy_arn=partition.apply(lambda p: f"arn:{p}:iam::aws:{DLM_POLICY}"), opts=child
        )
        aws.dlm.LifecyclePolicy(
            name,
            description=f"{config.stack}: daily snapshots of the data volumes",
            execution_role_arn=role.arn,
            state="ENABLED",
            policy_details=aws.dlm.LifecyclePolicyPolicyDetailsArgs(
                resource_types=["VOLUME"],
                target_tags=self.tag,
                schedules=[
                    aws.dlm.LifecyclePolicyPolicyDetailsScheduleArgs(
                        name="daily",
                        create_rule=aws.dlm.LifecyclePolicyPolicyDetailsScheduleCreateRuleArgs(
                            interval=24, interval_unit="HOURS", times="03:00"
                        ),
                        retain_rule=aws.dlm.LifecyclePolicyPolicyDetailsScheduleRetainRuleArgs(
                            count=config.snapshot_retention_count
                        ),
                        copy_tags=True,
                    )
                ],
            ),
            tags=config.base_tags(),
            opts=child,
        )
        self.register_outputs({"tag": self.tag})
