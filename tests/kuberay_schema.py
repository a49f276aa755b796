"""JSON schemas of the KubeRay v1 resources the deploy manifests use (RayCluster, RayJob),
written from the KubeRay v1 API reference: the fields and their types, unknown fields
refused. Pod templates and resource requirements refer to the Kubernetes schemas that
``kubernetes-validate`` ships, so everything inside a pod is checked by Kubernetes' own."""

K8S = "/api/_definitions.json#/$defs/io.k8s.api.core.v1."
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
POD_TEMPLATE = {"$ref": K8S + "PodTemplateSpec"}
INT = {"type": "integer", "minimum": 0}

AUTOSCALER = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
        "idleTimeoutSeconds": INT, "image": {"type": "string"},
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        "resources": {"$ref": K8S + "ResourceRequirements"},
        "securityContext": {"$ref": K8S + "SecurityContext"},
        "env": {"type": "array", "items": {"$ref": K8S + "EnvVar"}},
        "envFrom": {"type": "array", "items": {"$ref": K8S + "EnvFromSource"}},
        "volumeMounts": {"type": "array", "items": {"$ref": K8S + "VolumeMount"}},
        "version": {"enum": ["v1", "v2"]},
    },
}
HEAD_GROUP = {
    "type": "object", "additionalProperties": False, "required": ["template"],
    "properties": {
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "rayStartParams": STRING_MAP, "template": POD_TEMPLATE,
        "enableIngress": {"type": "boolean"}, "headService": {"type": "object"},
    },
}
WORKER_GROUP = {
    "type": "object", "additionalProperties": False, "required": ["groupName", "template"],
    "properties": {
        "groupName": {"type": "string"}, "replicas": INT, "minReplicas": INT,
        "maxReplicas": INT, "idleTimeoutSeconds": INT, "numOfHosts": INT,
        "rayStartParams": STRING_MAP, "template": POD_TEMPLATE, "suspend": {"type": "boolean"},
        "scaleStrategy": {"type": "object"},
    },
}
CLUSTER_SPEC = {
    "type": "object", "additionalProperties": False, "required": ["headGroupSpec"],
    "properties": {
        "rayVersion": {"type": "string"}, "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": AUTOSCALER, "headGroupSpec": HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP},
        "suspend": {"type": "boolean"}, "headServiceAnnotations": STRING_MAP,
        "gcsFaultToleranceOptions": {"type": "object"}, "managedBy": {"type": "string"},
    },
}
JOB_SPEC = {
    "type": "object", "additionalProperties": False, "required": ["entrypoint"],
    "properties": {
        "entrypoint": {"type": "string"}, "runtimeEnvYAML": {"type": "string"},
        "jobId": {"type": "string"}, "shutdownAfterJobFinishes": {"type": "boolean"},
        "ttlSecondsAfterFinished": INT, "activeDeadlineSeconds": INT,
        "rayClusterSpec": CLUSTER_SPEC, "clusterSelector": STRING_MAP,
        "submitterPodTemplate": POD_TEMPLATE,
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode",
                                    "SidecarMode"]},
        "entrypointNumCpus": {"type": "number"}, "entrypointNumGpus": {"type": "number"},
        "entrypointResources": {"type": "string"}, "suspend": {"type": "boolean"},
        "backoffLimit": INT, "managedBy": {"type": "string"}, "metadata": STRING_MAP,
        "submitterConfig": {"type": "object"}, "deletionStrategy": {"type": "object"},
    },
}


def resource(kind: str, spec: dict) -> dict:
    return {
        # the Kubernetes schemas' base, so that their "/api/_definitions.json" references work
        "$id": f"https://kubernetes.io/api/{kind.lower()}/v1",
        "type": "object", "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"}, "kind": {"const": kind},
            "metadata": {"$ref": "/api/_definitions.json#/$defs/"
                                 "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "spec": spec,
        },
    }


SCHEMAS = {"RayCluster": resource("RayCluster", CLUSTER_SPEC),
           "RayJob": resource("RayJob", JOB_SPEC)}
