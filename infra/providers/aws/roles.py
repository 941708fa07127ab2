"""Instance roles: what a tier's hosts may do in the AWS API, with no long-lived key on them.

A host gets its role's temporary credentials from the instance metadata service (IMDSv2
only, see hosts.py); nothing else is granted.
"""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.config import StackConfig


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assumed_by(service: str) -> str:
    """A trust policy: the AWS service may take on the role."""
    return policy({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


class InstanceRole(pulumi.ComponentResource):
    """An IAM role for EC2 with one inline policy, and the instance profile that carries it."""

    def __init__(
        self,
        name: str,
        config: StackConfig,
        document: pulumi.Input[str],
        description: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("microservices:aws:InstanceRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role = aws.iam.Role(
            name,
            assume_role_policy=assumed_by("ec2.amazonaws.com"),
            description=f"{config.stack}: {description}",
            tags=config.base_tags(),
            opts=child,
        )
        self.policy = aws.iam.RolePolicy(name, role=self.role.id, policy=document, opts=child)
        self.profile = aws.iam.InstanceProfile(name, role=self.role.name, tags=config.base_tags(), opts=child)
        self.register_outputs({"role": self.role.arn, "profile": self.profile.name})
