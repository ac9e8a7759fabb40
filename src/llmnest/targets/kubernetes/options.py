"""The options of `llmnest up --target kubernetes`: each sets the `KubernetesPlacement` field of its name.

`--replicas` and `--nodes` are shared with other targets (same flag, kind and default; the CLI's bounds are
the first declaring target's), so the placement's own validation holds this target's range.
"""

from __future__ import annotations

from ..declaration import Option

OPTIONS = (
    Option("context", "--context", "kubeconfig context (default: the current one).", label="Context",
           placeholder="the kubeconfig's current context"),
    Option("namespace", "--namespace", "Namespace of the deployment's objects (default: default).", label="Namespace",
           placeholder="default"),
    Option("create_namespace", "--create-namespace", "Create the namespace too.", kind=bool, default=False),
    # off the console's form: local's Replicas field has the same name there
    Option("replicas", "--replicas", "Engine replicas (pods, or pod groups with --nodes 2) behind the cluster's "
           "gateway (default 1).", kind=int, min=1, max=16),
    Option("nodes", "--nodes", "GPU nodes per replica: 1, or 2 (a LeaderWorkerSet).", kind=int, default=1, min=1,
           max=2),
    Option("gpu_type", "--gpu-type", "GPU node label value, e.g. NVIDIA-A10 (default: the labelled pool with the most "
           "free GPUs the model fits; needed offline).", label="GPU type",
           placeholder="the pool with the most free GPUs the model fits"),
    # off the console's form too: its field `weights` is the folder of `up --weights`
    Option("weights", "--weights-from", "Weights: hub (a Job fetches them once into a ReadWriteMany volume), "
           "oss://BUCKET/PATH (a read-only OSS volume) or pvc:CLAIM (a filled claim).", param="weights_from"),
    Option("storage_class", "--storage-class", "ReadWriteMany storage class for hub weights (default: the cluster's)."),
    Option("oss_endpoint", "--oss-endpoint", "OSS endpoint for oss:// weights, e.g. oss-cn-hangzhou-internal.aliyuncs.com."),
    Option("oss_secret", "--oss-secret", "Secret with akId/akSecret for the OSS volume (default: the node's RAM role)."),
    Option("load_timeout_s", "--load-timeout", "Seconds the engine may take to load before its probes fail it "
           "(default 1800).", kind=int, min=60, param="load_timeout"),
    Option("expose", "--expose", "The gateway's LoadBalancer: intranet (default), internet, or cluster (no "
           "LoadBalancer).", label="Expose", placeholder="intranet"),
    Option("slb_spec", "--slb-spec", "SLB instance spec of the LoadBalancer, e.g. slb.s1.small."),
    Option("autoscale_max", "--autoscale-max", "Scale engine replicas on the request queue up to this many.",
           kind=int, min=1, max=64),
    Option("autoscaler", "--autoscaler", "hpa (the custom metrics API) or keda, for --autoscale-max (default: whichever "
           "the cluster has, hpa first)."),
    Option("gateway_image", "--gateway-image", "Image with llmnest installed, for the gateway and the hub fetch Job."),
    Option("gateway_db_secret", "--gateway-db-secret", "Secret whose key `url` is the gateway's PostgreSQL URL "
           "(default llmnest-gateway-db)."),
    Option("gateway_redis_secret", "--gateway-redis-secret", "Secret whose key `url` is the Redis URL the gateway's "
           "replicas share limits through."),
)
