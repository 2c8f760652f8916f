"""Mutual TLS for Ray and SPU: the cluster's CA on the controller and the node certificates it
issues (pki.py). The node side of the check is nodescripts/tls_check.py."""
from sfcluster.tls.pki import (CA, ca_dir, cert_expiry, days_left, ensure_ca, fingerprint, load_ca, new_ca, purge_ca,
                               replace_ca, verify_node_cert)

__all__ = ["CA", "ca_dir", "cert_expiry", "days_left", "ensure_ca", "fingerprint", "load_ca", "new_ca", "purge_ca",
           "replace_ca", "verify_node_cert"]
