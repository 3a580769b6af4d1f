"""The llmrack policy pack: `pulumi preview --policy-pack infra/policy` (docs/pulumi.md)."""

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policy.validators import RESOURCE_VALIDATORS, pdb_in_prod

DESCRIPTIONS = {
    "llmrack-accelerator-limits": "Serving pods limit an accelerator resource; no accelerator request without a limit.",
    "llmrack-shm-for-tensor-parallel": "Pods with more than one accelerator mount a memory emptyDir at /dev/shm.",
    "llmrack-images-pinned-by-digest": "Every container image is pinned by digest.",
    "llmrack-no-open-load-balancer": "A LoadBalancer Service has an allowlist or is internal.",
}


def _resource_policy(name: str) -> ResourceValidationPolicy:
    check = RESOURCE_VALIDATORS[name]

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for problem in check(args.resource_type, args.props):
            report_violation(problem, None)

    return ResourceValidationPolicy(name=name, description=DESCRIPTIONS[name], validate=validate)


def _pdb(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for problem in pdb_in_prod([(r.resource_type, r.props) for r in args.resources]):
        report_violation(problem, None)


PolicyPack(
    name="llmrack",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[
        *(_resource_policy(name) for name in RESOURCE_VALIDATORS),
        StackValidationPolicy(
            name="llmrack-pdb-in-prod",
            description="Every prod serving Deployment is covered by a PodDisruptionBudget.",
            validate=_pdb,
        ),
    ],
)
