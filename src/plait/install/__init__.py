"""Installing plait in a Kubernetes cluster: the manifests as pure functions of settings (`manifests`)."""
