"""The front door of a stack with several load balancers: an AWS network load balancer.

It spreads over every zone, with an Elastic IP in each (the addresses a domain's records name),
and passes TCP through to the load balancer hosts, so TLS stays on nginx and nginx still sees
the client's address (instance targets keep it: the per-address limits keep working). It sends
new connections only to hosts whose nginx answers its health check, and lets a host that leaves
finish its connections first.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.config import StackConfig
from infra.providers.aws.network import Network
from topology import PORTS

# /health on port 80: with TLS on, nginx answers it itself (a redirect to HTTPS, which counts);
# without, nginx passes it to an API replica, and every load balancer host has the same ones.
# Port 443 is checked by a TCP connection: nginx listens there only with TLS.
HEALTH_PATH = "/health"
HEALTHY_CODES = "200-399"
CHECK_SECONDS = 10
# Two failed checks take a host out (about 20 s), two good ones bring it back.
THRESHOLD = 2
# How long a host taken out keeps its open connections: as long as nginx keeps an idle one
# (keepalive_timeout), so a client's kept-alive connection ends on nginx's terms.
DRAIN_SECONDS = 30


class FrontDoor(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        config: StackConfig,
        network: Network,
        instance_ids: list[pulumi.Output[str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("microservices:aws:FrontDoor", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = config.base_tags("lb")
        self.addresses = [
            aws.ec2.Eip(
                f"{name}-{zone}", domain="vpc", tags={**tags, "Name": f"{config.stack}-front-{zone}"}, opts=child
            )
            for zone in config.zones
        ]
        self.balancer = aws.lb.LoadBalancer(
            name,  # named by Pulumi (a random suffix), so that a replacement can be made before the old goes
            load_balancer_type="network",
            internal=False,
            enable_cross_zone_load_balancing=True,
            subnet_mappings=[
                aws.lb.LoadBalancerSubnetMappingArgs(subnet_id=network.public_subnets[zone].id, allocation_id=eip.id)
                for zone, eip in zip(config.zones, self.addresses, strict=True)
            ],
            enable_deletion_protection=config.production,
            tags=tags,
            opts=child,
        )
        for port in (PORTS["http"], PORTS["https"]):
            health = (
                aws.lb.TargetGroupHealthCheckArgs(
                    protocol="HTTP", port=str(port), path=HEALTH_PATH, matcher=HEALTHY_CODES, **self._timing()
                )
                if port == PORTS["http"]
                else aws.lb.TargetGroupHealthCheckArgs(protocol="TCP", port=str(port), **self._timing())
            )
            group = aws.lb.TargetGroup(
                f"{name}-{port}",
                port=port,
                protocol="TCP",
                target_type="instance",
                vpc_id=network.vpc.id,
                preserve_client_ip="true",
                deregistration_delay=DRAIN_SECONDS,
                health_check=health,
                tags=tags,
                opts=child,
            )
            for number, instance_id in enumerate(instance_ids, start=1):
                aws.lb.TargetGroupAttachment(
                    f"{name}-{port}-lb-{number}",
                    target_group_arn=group.arn,
                    target_id=instance_id,
                    port=port,
                    opts=child,
                )
            aws.lb.Listener(
                f"{name}-{port}",
                load_balancer_arn=self.balancer.arn,
                port=port,
                protocol="TCP",
                default_actions=[aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=group.arn)],
                tags=tags,
                opts=child,
            )
        self.register_outputs(
            {"dns_name": self.balancer.dns_name, "addresses": [eip.public_ip for eip in self.addresses]}
        )

    @staticmethod
    def _timing() -> dict[str, int]:
        return {"interval": CHECK_SECONDS, "healthy_threshold": THRESHOLD, "unhealthy_threshold": THRESHOLD}
