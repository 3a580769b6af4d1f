"""The llmrack Pulumi program: read the stack config, then wire the components. Nothing else lives here."""

import pulumi
import pulumi_kubernetes as k8s

from infra import config
from infra.components.accelerator_stack import AcceleratorStack
from infra.components.aws_fleet import AwsFleet, AwsFleetArgs
from infra.components.batch import BatchService, batch_args
from infra.components.huaweicloud_fleet import HuaweiCloudFleet, HuaweiCloudFleetArgs
from infra.components.monitoring import Monitoring
from infra.components.security import CA_KEY, FrontDoorSecurity, security_args
from infra.components.serving import ServingStack, service_dns_names
from infra.components.static_fleet import StaticFleet
from infra.rules import NAMESPACE, StackConfigError
from infra.wiring import component_args

# Everything is read and checked, and every component's arguments validated, before the first resource.
cfg = config.load(pulumi.Config(NAMESPACE), pulumi.get_stack())
args = component_args(cfg)
# The batch service only when the stack asks for it; checked here, before any resource (its upstream is the
# serving Service, named once that exists).
batch_config = pulumi.Config(NAMESPACE).get_object("batch")
batch = (batch_args(batch_config, cfg.serving.namespace, cfg.image, "", args.serving.port, cfg.api_keys)
         if batch_config is not None else None)
# TLS and NetworkPolicies when the stack asks for them (llmrack:security); checked here too. The key store
# (llmrack:keysStore) is the serving pods' keys Secret (infra.config -> ServingArgs.keys_store).
stack_config = pulumi.Config(NAMESPACE)
security_config = stack_config.get_object("security")
front_door = (security_args(security_config, cfg.serving.namespace, cfg.spec.name, args.serving.port,
                            list(args.serving.allowlist or []), stack_config.get_secret("tlsCertificate"),
                            stack_config.get_secret("tlsPrivateKey"), stack_config.get_secret("tlsCaCertificate"),
                            service_dns_names(cfg.serving.namespace) if cfg.spec.serving.tls else [],
                            batch.port if batch is not None else None)
              if security_config is not None else None)
# serving.tls: the pods serve TLS with the front door's certificate (its Secret), so it needs llmrack:security.
if cfg.spec.serving.tls:
    if front_door is None:
        raise StackConfigError("llmrack:deployment: serving.tls needs llmrack:security (the certificate the "
                               "serving pods serve with): add it, or set serving.tls: false")
    args.serving.tls_secret_name = front_door.tls_secret_name
    if batch is not None:
        # The batch service verifies the serving pods' certificate against the CA in the same Secret.
        if not front_door.secret_has_ca:
            raise StackConfigError(
                "llmrack:tlsCaCertificate: with serving.tls the batch service (llmrack:batch) verifies the serving "
                "pods' certificate against the CA that signed it, and llmrack:tlsCertificate comes without it: set "
                "llmrack:tlsCaCertificate (secret, PEM) to that CA's certificate, or let cert-manager issue the "
                "certificate (llmrack:security.certManagerIssuer)")
        batch.upstream_ca_secret, batch.upstream_ca_key = front_door.tls_secret_name, CA_KEY

fleet: AwsFleet | HuaweiCloudFleet | StaticFleet | None = None
if isinstance(args.fleet, AwsFleetArgs):
    fleet = AwsFleet("fleet", args.fleet)
elif isinstance(args.fleet, HuaweiCloudFleetArgs):
    fleet = HuaweiCloudFleet("fleet", args.fleet)
elif args.fleet is not None:
    fleet = StaticFleet("fleet", args.fleet)

kube = cfg.kubernetes
if kube.source == "stack":
    assert kube.stack is not None
    cluster = pulumi.StackReference("cluster-stack", stack_name=kube.stack)
    provider = k8s.Provider("cluster", kubeconfig=cluster.require_output(kube.output), context=kube.context)
elif kube.source == "config":
    provider = k8s.Provider("cluster", kubeconfig=cfg.kubeconfig, context=kube.context)
else:
    # The operator's KUBECONFIG, made explicit so every object goes to the same cluster and context.
    provider = k8s.Provider("cluster", context=kube.context)
on_cluster = pulumi.ResourceOptions(providers=[provider])

accelerators = AcceleratorStack("accelerators", args.accelerator_stack, on_cluster)
if args.monitoring is not None:
    args.monitoring.batch_service = batch is not None  # scraped as the monitoring role scrapes it on racks
    monitoring = Monitoring("monitoring", args.monitoring, on_cluster)
serving = ServingStack("serving", args.serving, on_cluster)
security = None
if front_door is not None:
    # In the serving namespace, which the serving stack creates.
    security = FrontDoorSecurity("security", front_door,
                                 pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[serving])))
if batch is not None:
    batch.upstream_service = serving.service_name
    # After the front door's Secret too when the batch pods mount its CA (serving.tls).
    after = [serving, security] if security is not None and batch.upstream_ca_secret else [serving]
    BatchService("batch", batch, pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=after)))

pulumi.export("plan", {
    "accelerator": cfg.accelerator.name,
    "tensorParallel": cfg.plan.tensor_parallel,
    "replicas": cfg.plan.replicas,
    "nodes": cfg.plan.nodes,
    "accelerators": cfg.plan.count,
    "k8sResource": cfg.accelerator.k8s_resource,
})
pulumi.export("namespace", cfg.serving.namespace)
pulumi.export("service", serving.service_name)
pulumi.export("image", cfg.image)
pulumi.export("canary", {"image": cfg.canary.image, "sharePercent": serving.canary_share} if cfg.canary else None)
if fleet is not None:
    # `pulumi stack output --json | llmrack inventory from-stack - --out DIR` writes the Ansible inventory.
    pulumi.export("inventory", fleet.inventory)
