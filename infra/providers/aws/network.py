"""The network: a VPC with a public and a private subnet per zone, and a security group per
tier whose ingress rules are exactly the topology's ACCESS list."""

from __future__ import annotations

import ipaddress

import pulumi
import pulumi_aws as aws

from infra.config import StackConfig
from topology import ACCESS, ADMIN, ANYWHERE, TIERS, Rule


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
        # (public, zone) -> the association that gives the zone's subnet its way out (the
        # internet gateway, or the NAT gateway): hosts wait for it, so that cloud-init can update.
        self.routes: dict[tuple[bool, str], aws.ec2.RouteTableAssociation] = {}
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
            self.routes[True, zone] = aws.ec2.RouteTableAssociation(
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
            self.routes[False, zone] = aws.ec2.RouteTableAssociation(
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
                    to_port=rule.last_port or rule.port,
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
