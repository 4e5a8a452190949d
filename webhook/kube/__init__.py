"""The one way to reach a cluster: client and kubeconfig loading, API error descriptions, paging, the
node/namespace informer cache (server) and the object listing (audit)."""
