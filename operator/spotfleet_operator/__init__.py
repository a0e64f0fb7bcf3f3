"""spotfleet's Kubernetes and AWS side: Kopf handlers, reconcile, AWS adapters."""

__version__ = "0.1.0"
