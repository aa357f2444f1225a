"""What a cluster would read from the rendered manifests: the pod a workload creates, the Service in front of it,
the monitors that scrape it, and the ConfigMaps its volumes name. Only the rendered output is read (helm template,
kubectl kustomize, the KServe files as applied), never a hand-written copy."""

import copy

import yaml


def load(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


class Pod:
    """A pod as the kubelet gets it: its spec, labels and the objects around it in the same rendered output."""

    def __init__(self, name, spec, labels, docs, annotations=None):
        self.name = name
        self.spec = copy.deepcopy(spec)
        self.labels = dict(labels)
        self.docs = docs
        # KServe's scrape annotations (prometheus.kserve.io/port, /path), on serving runtimes.
        self.annotations = dict(annotations or {})

    def containers(self, init=True):
        listed = (self.spec.get("initContainers") or []) if init else []
        return listed + self.spec["containers"]

    def container(self, name):
        for c in self.containers():
            if c["name"] == name:
                return c
        raise KeyError(f"no container {name!r} in {self.name}")

    def config_map(self, name):
        for doc in self.docs:
            if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == name:
                return doc
        return None

    def service(self):
        """The Service whose selector picks this pod (None: the pod is not behind one)."""
        for doc in self.docs:
            if doc.get("kind") == "Service" and matches(doc["spec"].get("selector") or {}, self.labels):
                return doc
        return None

    def port_number(self, port, container=None):
        """A probe's or a targetPort's `port`: a number, or the name of a container port."""
        if isinstance(port, int):
            return port
        if isinstance(port, str) and port.isdigit():
            return int(port)
        for c in [container] if container else self.containers():
            for p in c.get("ports") or []:
                if p.get("name") == port:
                    return p["containerPort"]
        raise ValueError(f"port {port!r} names no container port")

    def service_port(self, name):
        """The pod port behind the Service's port `name` (its targetPort)."""
        service = self.service()
        if service is None:
            raise ValueError(f"no Service selects {self.name}")
        for p in service["spec"]["ports"]:
            if p.get("name") == name:
                return self.port_number(p.get("targetPort", p["port"]))
        raise ValueError(f"the Service {service['metadata']['name']} has no port {name!r}")

    def scrape_targets(self):
        """(port, path) of every endpoint of the ServiceMonitors selecting the Service and the PodMonitors selecting
        the pod."""
        targets = []
        service = self.service()
        for doc in self.docs:
            kind = doc.get("kind")
            selector = (doc.get("spec") or {}).get("selector", {}).get("matchLabels", {})
            if kind == "ServiceMonitor" and service and matches(selector, service["metadata"].get("labels") or {}):
                for endpoint in doc["spec"]["endpoints"]:
                    port = endpoint.get("targetPort") or self.service_port(endpoint["port"])
                    targets.append((self.port_number(port), endpoint.get("path", "/metrics")))
            if kind == "PodMonitor" and matches(selector, self.labels):
                for endpoint in doc["spec"]["podMetricsEndpoints"]:
                    targets.append((self.port_number(endpoint["port"]), endpoint.get("path", "/metrics")))
        if "prometheus.kserve.io/port" in self.annotations:
            path = self.annotations.get("prometheus.kserve.io/path", "/metrics")
            targets.append((int(self.annotations["prometheus.kserve.io/port"]), path))
        return targets


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def deployment(docs, container):
    """The pod of the Deployment that runs `container` (as a container or a native sidecar)."""
    for doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        template = doc["spec"]["template"]
        spec = template["spec"]
        names = [c["name"] for c in (spec.get("initContainers") or []) + spec["containers"]]
        if container in names:
            return Pod(doc["metadata"]["name"], spec, template["metadata"].get("labels") or {}, docs)
    raise ValueError(f"no Deployment runs a container {container!r}")


# What KServe adds to a runtime's container: the storage initializer's volume, read-only at /mnt/models.
KSERVE_MODELS = "kserve-provision-location"


def serving_runtime(docs, name):
    """The predictor pod KServe makes from a (Cluster)ServingRuntime: the runtime's containers and volumes, the
    models volume that the storage initializer fills at /mnt/models, and the default grace period."""
    for doc in docs:
        if doc.get("kind") in ("ClusterServingRuntime", "ServingRuntime") and doc["metadata"]["name"] == name:
            spec = doc["spec"]
            containers = copy.deepcopy(spec["containers"])
            for c in containers:
                if c["name"] == "kserve-container":
                    c.setdefault("volumeMounts", []).append(
                        {"name": KSERVE_MODELS, "mountPath": "/mnt/models", "readOnly": True}
                    )
            pod = {
                "containers": containers,
                "volumes": copy.deepcopy(spec.get("volumes") or []) + [{"name": KSERVE_MODELS, "emptyDir": {}}],
                "securityContext": copy.deepcopy(spec.get("securityContext") or {}),
            }
            labels = {"serving.kserve.io/inferenceservice": "iris"}
            return Pod(name, pod, labels, docs, spec.get("annotations"))
    raise ValueError(f"no serving runtime {name!r}")


def kserve_port(pod):
    """The port KServe routes to: the runtime container's first declared port (8080 when none is)."""
    ports = pod.container("kserve-container").get("ports") or []
    if not ports:
        return 8080, "http1"
    return ports[0]["containerPort"], ports[0].get("name", "http1")
