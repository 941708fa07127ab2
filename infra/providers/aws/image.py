"""The app image: built from the source, tagged by its content, pushed to the stack's ECR
repository and referenced by digest; or an image reference given in config, used as it is."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from infra import release
from infra.config import StackConfig
from infra.providers.aws.roles import InstanceRole, policy

# What a host needs to pull: a registry token (which cannot be scoped to one repository),
# then the layers of this repository only. No push, no delete, no other repository.
PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]


class AppImage(pulumi.ComponentResource):
    """`reference` is what the hosts run; `pull_role` (None for a given image) lets them pull it."""

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("microservices:aws:AppImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.pull_role: InstanceRole | None = None
        self.registry: pulumi.Output[str] | None = None
        if config.app_image:
            self.reference = pulumi.Output.from_input(config.app_image)
            self.register_outputs({"reference": self.reference})
            return
        repository = aws.ecr.Repository(
            name,
            name=f"{config.project}-{config.stack}-app",
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
            force_delete=not config.production,
            tags=config.base_tags(),
            opts=child,
        )
        # A new tag for every change to the image's content, the same tag otherwise: an
        # IMMUTABLE repository takes each release once, and an unchanged source pushes nothing.
        self.tag = release.content_tag()
        token = aws.ecr.get_authorization_token_output(registry_id=repository.registry_id)
        image = docker.Image(
            name,
            image_name=repository.repository_url.apply(lambda url: f"{url}:{self.tag}"),
            build=docker.DockerBuildArgs(
                context=str(release.SOURCE),
                dockerfile=str(release.SOURCE / release.DOCKERFILE),
                platform="linux/amd64",
                args={"REVISION": self.tag},
            ),
            registry=docker.RegistryArgs(
                server=repository.repository_url, username=token.user_name, password=token.password
            ),
            opts=child,
        )
        # The digest, not the tag: what runs is exactly what was built.
        self.reference = image.repo_digest
        self.registry = repository.repository_url.apply(lambda url: url.split("/", 1)[0])
        self.pull_role = InstanceRole(
            f"{name}-pull",
            config,
            repository.arn.apply(
                lambda arn: policy(
                    {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
                    {"Effect": "Allow", "Action": PULL_ACTIONS, "Resource": arn},
                )
            ),
            "pull the app image from its ECR repository",
            opts=child,
        )
        self.register_outputs({"reference": self.reference, "tag": self.tag})
