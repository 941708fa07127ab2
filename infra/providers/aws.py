"""AWS: the topology as a VPC, security groups, EC2 instances and an ECR image.

One ComponentResource per concern: Network, Firewalls, a Tier per tier of hosts, AppImage.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from infra.config import StackConfig
from infra.providers import Deployment, Host
from infra.topology import ACCESS, ADMIN, ANYWHERE, TIERS, Rule

# Debian's official AMIs (https://wiki.debian.org/Cloud/AmazonEC2Image).
DEBIAN_OWNER = "136693071363"
DEBIAN_12_NAME = "debian-12-amd64-*"
INSTANCE_TYPES = {
    "nano": "t3.nano",
    "micro": "t3.micro",
    "small": "t3.small",
    "medium": "t3.medium",
    "large": "m6i.large",
    "xlarge": "m6i.xlarge",
    "compute-large": "c6i.large",
    "memory-large": "r6i.large",
}
REPO_ROOT = Path(__file__).resolve().parents[2]


class Network(pulumi.ComponentResource):
    """VPC; a public and a private subnet per zone; internet gateway; NAT for private egress."""

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("microservices:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = config.base_tags()
        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=config.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={**tags, "Name": f"{config.stack}-vpc"},
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=tags, opts=child)

        blocks = list(ipaddress.ip_network(config.vpc_cidr).subnets(new_prefix=24))
        half = len(blocks) // 2
        self.public_subnets: dict[str, aws.ec2.Subnet] = {}
        self.private_subnets: dict[str, aws.ec2.Subnet] = {}
        for index, zone in enumerate(config.zones):
            self.public_subnets[zone] = aws.ec2.Subnet(
                f"{name}-public-{zone}",
                vpc_id=self.vpc.id,
                cidr_block=str(blocks[index]),
                availability_zone=zone,
                map_public_ip_on_launch=False,  # only the hosts that need one get an address
                tags={**tags, "Name": f"{config.stack}-public-{zone}", "access": "public"},
                opts=child,
            )
            self.private_subnets[zone] = aws.ec2.Subnet(
                f"{name}-private-{zone}",
                vpc_id=self.vpc.id,
                cidr_block=str(blocks[half + index]),
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={**tags, "Name": f"{config.stack}-private-{zone}", "access": "private"},
                opts=child,
            )

        public_routes = aws.ec2.RouteTable(
            f"{name}-public",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=gateway.id)],
            tags={**tags, "Name": f"{config.stack}-public"},
            opts=child,
        )
        for zone, subnet in self.public_subnets.items():
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{zone}", subnet_id=subnet.id, route_table_id=public_routes.id, opts=child
            )

        # NAT: one per zone on production stacks (a zone outage keeps the others' egress),
        # one shared gateway otherwise.
        nat_zones = config.zones if config.nat_per_zone else config.zones[:1]
        nats = {}
        for zone in nat_zones:
            address = aws.ec2.Eip(f"{name}-nat-{zone}", domain="vpc", tags=tags, opts=child)
            nats[zone] = aws.ec2.NatGateway(
                f"{name}-nat-{zone}",
                allocation_id=address.id,
                subnet_id=self.public_subnets[zone].id,
                tags={**tags, "Name": f"{config.stack}-nat-{zone}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
            )
        for zone, subnet in self.private_subnets.items():
            nat = nats.get(zone, nats[nat_zones[0]])
            routes = aws.ec2.RouteTable(
                f"{name}-private-{zone}",
                vpc_id=self.vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags={**tags, "Name": f"{config.stack}-private-{zone}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{zone}", subnet_id=subnet.id, route_table_id=routes.id, opts=child
            )
        self.register_outputs({"vpc_id": self.vpc.id})


class Firewalls(pulumi.ComponentResource):
    """A security group per tier whose ingress rules are exactly the topology's ACCESS list."""

    def __init__(
        self, name: str, config: StackConfig, network: Network, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("microservices:aws:Firewalls", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.groups = {
            tier: aws.ec2.SecurityGroup(
                f"{name}-{tier}",
                vpc_id=network.vpc.id,
                description=f"{config.stack} {tier}: {TIERS[tier].description}",
                tags={**config.base_tags(tier), "Name": f"{config.stack}-{tier}"},
                opts=child,
            )
            for tier in TIERS
        }
        for rule in ACCESS:
            for index, source in enumerate(self._sources(rule, config)):
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-{rule.target}-{rule.port}-from-{rule.source}-{index}",
                    security_group_id=self.groups[rule.target].id,
                    ip_protocol="tcp",
                    from_port=rule.port,
                    to_port=rule.port,
                    description=rule.description,
                    tags=config.base_tags(rule.target),
                    opts=child,
                    **source,
                )
        for tier, group in self.groups.items():
            # Egress stays open: hosts fetch packages and images (through NAT when private).
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-{tier}-egress",
                security_group_id=group.id,
                ip_protocol="-1",
                cidr_ipv4="0.0.0.0/0",
                description="all outbound",
                tags=config.base_tags(tier),
                opts=child,
            )
        self.register_outputs({tier: group.id for tier, group in self.groups.items()})

    def _sources(self, rule: Rule, config: StackConfig) -> list[dict]:
        if rule.source == ANYWHERE:
            return [{"cidr_ipv4": "0.0.0.0/0"}]
        if rule.source == ADMIN:
            return [{"cidr_ipv4": cidr} for cidr in config.admin_cidrs]
        return [{"referenced_security_group_id": self.groups[rule.source].id}]


def cloud_init(hostname: str, config: StackConfig) -> str:
    """Prepare a host for Ansible: admin user with the key, python3, hostname, no passwords."""
    document = {
        "hostname": hostname,
        "preserve_hostname": False,
        "users": [
            {
                "name": config.ssh_user,
                "groups": ["sudo"],
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [config.ssh_public_key],
            }
        ],
        "disable_root": True,
        "ssh_pwauth": False,
        "package_update": True,
        "packages": ["python3", "python3-apt", "sudo"],
    }
    return "#cloud-config\n" + json.dumps(document, indent=2)


class Tier(pulumi.ComponentResource):
    """The hosts of one tier, spread round robin over the stack's zones."""

    def __init__(
        self,
        name: str,
        config: StackConfig,
        network: Network,
        firewalls: Firewalls,
        ami: pulumi.Output[str],
        key: aws.ec2.KeyPair,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("microservices:aws:Tier", name, None, opts)
        tier = TIERS[name]
        size = config.tiers[name]
        subnets = network.public_subnets if tier.public else network.private_subnets
        self.hosts: list[Host] = []
        for number in range(1, size.count + 1):
            zone = config.zones[(number - 1) % len(config.zones)]
            hostname = f"{config.stack}-{name}-{number}"
            tags = {**config.base_tags(name), "Name": hostname}
            child = pulumi.ResourceOptions(parent=self)
            instance = aws.ec2.Instance(
                hostname,
                ami=ami,
                instance_type=INSTANCE_TYPES[size.size],
                subnet_id=subnets[zone].id,
                vpc_security_group_ids=[firewalls.groups[name].id],
                key_name=key.key_name,
                associate_public_ip_address=tier.public,
                user_data=cloud_init(hostname, config),
                root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                    volume_size=size.root_gb, volume_type="gp3", encrypted=True, delete_on_termination=True
                ),
                metadata_options=aws.ec2.InstanceMetadataOptionsArgs(http_tokens="required", http_endpoint="enabled"),
                volume_tags=tags,
                tags=tags,
                opts=child,
            )
            public_ip = None
            if tier.public:
                # An Elastic IP keeps the public address across stops and replacements.
                public_ip = aws.ec2.Eip(hostname, instance=instance.id, domain="vpc", tags=tags, opts=child).public_ip
            if tier.data_volume:
                volume = aws.ebs.Volume(
                    f"{hostname}-data",
                    availability_zone=zone,
                    size=size.data_gb,
                    type="gp3",
                    encrypted=True,
                    tags={**tags, "Name": f"{hostname}-data", "purpose": "data"},
                    opts=pulumi.ResourceOptions(parent=self, protect=config.production),
                )
                aws.ec2.VolumeAttachment(
                    f"{hostname}-data", device_name="/dev/sdf", volume_id=volume.id, instance_id=instance.id, opts=child
                )
            self.hosts.append(Host(hostname, name, zone, instance.private_ip, public_ip))
        self.register_outputs({"hosts": [h.name for h in self.hosts]})


class AppImage(pulumi.ComponentResource):
    """The app image in an ECR repository of the stack, referenced by digest; or an image
    reference given in config (appImage), used as it is."""

    def __init__(self, name: str, config: StackConfig, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("microservices:aws:AppImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        if config.app_image:
            self.reference = pulumi.Output.from_input(config.app_image)
        else:
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
            token = aws.ecr.get_authorization_token_output(registry_id=repository.registry_id)
            image = docker.Image(
                name,
                image_name=repository.repository_url.apply(lambda url: f"{url}:{pulumi.get_stack()}"),
                build=docker.DockerBuildArgs(
                    context=str(REPO_ROOT),
                    dockerfile=str(REPO_ROOT / "Dockerfile.app"),
                    platform="linux/amd64",
                ),
                registry=docker.RegistryArgs(
                    server=repository.repository_url, username=token.user_name, password=token.password
                ),
                opts=child,
            )
            # The digest, not the tag: what runs is exactly what was built.
            self.reference = image.repo_digest
        self.register_outputs({"reference": self.reference})


def deploy(config: StackConfig) -> Deployment:
    network = Network("network", config)
    firewalls = Firewalls("firewalls", config, network)
    ami = aws.ec2.get_ami_output(
        most_recent=True,
        owners=[DEBIAN_OWNER],
        filters=[
            aws.ec2.GetAmiFilterArgs(name="name", values=[DEBIAN_12_NAME]),
            aws.ec2.GetAmiFilterArgs(name="architecture", values=["x86_64"]),
        ],
    ).id
    key = aws.ec2.KeyPair("admin", public_key=config.ssh_public_key, tags=config.base_tags())
    tiers = {name: Tier(name, config, network, firewalls, ami, key) for name in TIERS}
    image = AppImage("app-image", config)
    return Deployment(
        hosts={name: tier.hosts for name, tier in tiers.items()},
        lb_public_ip=tiers["lb"].hosts[0].public_ip,
        bastion_public_ip=tiers["bastion"].hosts[0].public_ip,
        app_image=image.reference,
    )
