"""The Pulumi program: cloud GPU/NPU fleets, the Kubernetes accelerator stack, serving and monitoring."""
