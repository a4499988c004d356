#!/usr/bin/env python3
"""Checks the rendered manifests for the rules that deploy/README.md promises
and a schema can't express. kubernetes-validate proves each object is valid
Kubernetes; this proves it is the object we meant.

Usage: policy_check.py RENDERED.yaml...   (output of `kubectl kustomize`)

Prints one line per violation, naming the file, the object and the field, and
exits 1 if there is any.
"""

import json
import os
import re
import sys

import yaml

POD_OWNERS = {"Deployment", "Job", "CronJob", "StatefulSet", "DaemonSet", "Pod"}
AUTH_PROXY_EGRESS_PORTS = {53, 443}


class Checker:
    def __init__(self):
        self.problems = []

    def fail(self, where, message):
        self.problems.append(f"{where}: {message}")

    def expect(self, cond, where, message):
        if not cond:
            self.fail(where, message)


def pod_spec(obj):
    kind = obj["kind"]
    if kind == "Pod":
        return obj["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def job_spec(obj):
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]
    return obj["spec"]


def probe_path(probe):
    return ((probe or {}).get("httpGet") or {}).get("path")


def check_pod(c, where, obj):
    spec = pod_spec(obj)
    psc = spec.get("securityContext") or {}
    c.expect(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot must be true")
    if spec.get("automountServiceAccountToken") is not False:
        sa = spec.get("serviceAccountName", "default")
        c.expect(sa in API_USERS.get(where.split(":")[0], set()), where,
                 "automountServiceAccountToken must be false, unless the service account is bound only to "
                 "a Role limited to creating Jobs from the importer CronJob (deploy/k8s/console/rerun)")
    c.expect(not spec.get("hostNetwork"), where, "hostNetwork is not allowed")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    for ctr in spec.get("initContainers", []) + spec["containers"]:
        cw = f"{where} container {ctr['name']}"
        sc = ctr.get("securityContext") or {}
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        c.expect(seccomp == "RuntimeDefault", cw, "seccompProfile must be RuntimeDefault")
        c.expect(sc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation must be false")
        c.expect(sc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem must be true")
        c.expect("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), cw,
                 "capabilities.drop must contain ALL")
        c.expect(not ((sc.get("capabilities") or {}).get("add")), cw, "no capabilities may be added")
        c.expect(sc.get("runAsUser", psc.get("runAsUser", 1)) != 0, cw, "runAsUser must not be 0")
        res = ctr.get("resources") or {}
        for section in ("requests", "limits"):
            for r in ("cpu", "memory"):
                c.expect(r in (res.get(section) or {}), cw, f"resources.{section}.{r} must be set")
        image = ctr.get("image", "")
        tag = image.rsplit("/", 1)[-1]
        c.expect("@sha256:" in image or (":" in tag and not tag.endswith(":latest")), cw,
                 f"image {image!r} must carry a tag other than latest (set it in overlays/<env>/release)")
        c.expect("/" in image, cw, f"image {image!r} has no registry: the overlay's release component didn't apply")


def check_auth_proxy(c, where, obj):
    spec = pod_spec(obj)
    ctrs = {x["name"]: x for x in spec["containers"]}
    c.expect(set(ctrs) == {"envoy", "sidecar"}, where, f"containers must be envoy and sidecar, got {sorted(ctrs)}")
    envoy, sidecar = ctrs.get("envoy", {}), ctrs.get("sidecar", {})
    c.expect(probe_path(envoy.get("readinessProbe")) == "/health_check", where,
             "envoy readinessProbe must be GET /health_check")
    c.expect(probe_path(sidecar.get("livenessProbe")) == "/livez", where, "sidecar livenessProbe must be GET /livez")
    c.expect(probe_path(sidecar.get("readinessProbe")) == "/readyz", where,
             "sidecar readinessProbe must be GET /readyz")
    ports = {p["name"]: p["containerPort"] for x in spec["containers"] for p in x.get("ports", [])}
    c.expect(ports.get("http") == 8080, where, "envoy must expose port http=8080")
    c.expect(ports.get("probes") == 15021, where, "sidecar must expose port probes=15021")
    c.expect("15001" not in str(ports.values()), where, "the token port 15001 must not be a container port")
    check_secret_files(c, where, spec, sidecar)
    mounts = {m["mountPath"] for m in envoy.get("volumeMounts", [])}
    c.expect("/etc/envoy" not in mounts, where, "mounting over /etc/envoy would hide the baked-in authproxy.wasm")
    c.expect("replicas" not in obj["spec"], where, "replicas must be left to the HPA")


def files_in(node):
    """Every `file:` value in a parsed sidecar config."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "file" and isinstance(v, str):
                yield v
            else:
                yield from files_in(v)
    elif isinstance(node, list):
        for v in node:
            yield from files_in(v)


def check_secret_files(c, where, spec, sidecar):
    """Every secret or key file that sidecar.yaml names must be provided by a
    Secret projected into the sidecar container, and the other way round."""
    config_map = SIDECAR_CONFIGS.get(where.split(":")[0])
    if config_map is None:
        c.fail(where, "no sidecar-config ConfigMap rendered next to the Deployment")
        return
    wanted = set(files_in(yaml.safe_load(config_map)))
    # AUTHPROXY__..._FILE overrides (e.g. the shared store's password) name
    # files the sidecar reads too.
    wanted |= {e["value"] for e in sidecar.get("env", [])
               if e["name"].startswith("AUTHPROXY__") and e["name"].endswith("FILE") and e.get("value")}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    provided = set()
    for m in sidecar.get("volumeMounts", []):
        vol = volumes.get(m["name"], {})
        for src in (vol.get("projected") or {}).get("sources", []):
            for item in (src.get("secret") or {}).get("items", []):
                provided.add(m["mountPath"].rstrip("/") + "/" + item["path"])
        if "secret" in vol:
            for item in vol["secret"].get("items", []):
                provided.add(m["mountPath"].rstrip("/") + "/" + item["path"])
    for f in sorted(wanted - provided):
        c.fail(where, f"sidecar.yaml reads {f}, but no Secret item is mounted there")
    for f in sorted(provided - wanted):
        c.fail(where, f"Secret item mounted at {f} is not used by sidecar.yaml")


# Rendered file -> text of its sidecar.yaml, filled in before the checks run.
SIDECAR_CONFIGS = {}

# Rendered file -> service accounts allowed a token: every binding of theirs is
# to a namespaced Role that only reads the importer CronJob and creates Jobs.
API_USERS = {}
RERUN_RULES = [
    {"apiGroups": ["batch"], "resources": ["cronjobs"], "resourceNames": ["importer"], "verbs": ["get"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
]


def api_users(c, path, docs):
    roles = {o["metadata"]["name"]: o for o in docs if o["kind"] == "Role"}
    for o in docs:
        if o["kind"] == "ClusterRoleBinding":
            c.fail(f"{path}: ClusterRoleBinding/{o['metadata']['name']}", "no cluster-wide bindings")
    ok, bad = set(), set()
    for o in docs:
        if o["kind"] != "RoleBinding":
            continue
        where = f"{path}: RoleBinding/{o['metadata']['name']}"
        ref = o["roleRef"]
        role = roles.get(ref["name"]) if ref["kind"] == "Role" else None
        good = role is not None and (role.get("rules") or []) == RERUN_RULES
        c.expect(good, where, f"binds {ref['kind']}/{ref['name']}, which is not the re-run Role {RERUN_RULES}")
        for s in o.get("subjects") or []:
            if s.get("kind") == "ServiceAccount":
                (ok if good else bad).add(s["name"])
    API_USERS[path] = ok - bad


def configmap_refs(spec):
    """Names of the ConfigMaps a pod spec mounts or reads into its environment."""
    for v in spec.get("volumes", []):
        if "configMap" in v:
            yield v["configMap"]["name"]
        for src in (v.get("projected") or {}).get("sources", []):
            if "configMap" in src:
                yield src["configMap"]["name"]
    for ctr in spec.get("initContainers", []) + spec["containers"]:
        for ef in ctr.get("envFrom", []):
            if "configMapRef" in ef:
                yield ef["configMapRef"]["name"]
        for e in ctr.get("env", []):
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref:
                yield ref["name"]


def check_importer(c, where, spec):
    """The importer refuses to start without its temp dir and registry file."""
    for ctr in spec["containers"]:
        if "importer" not in ctr.get("image", ""):
            continue
        cw = f"{where} container {ctr['name']}"
        env = {e["name"]: e.get("value") for e in ctr.get("env", [])}
        mounts = {m["mountPath"].rstrip("/") for m in ctr.get("volumeMounts", [])}
        tmp = env.get("IMPORTER_TEMP_DIR") or "/tmp"
        c.expect(tmp in mounts, cw, f"the importer's temp dir {tmp} must be a mounted volume")
        registry = env.get("IMPORTER_REGISTRY")
        c.expect(registry and registry.rsplit("/", 1)[0] in mounts, cw,
                 "IMPORTER_REGISTRY must point into a mounted volume (ConfigMap importer-registry)")
        names = {e["name"] for e in ctr.get("env", [])}
        c.expect("DATABASE_URL" in names, cw, "DATABASE_URL must be set (from Secret importer-database)")


def wasm_in_image():
    """Where envoy.Dockerfile bakes the filter in: the target of its .wasm COPY."""
    dockerfile = os.path.join(os.path.dirname(os.path.abspath(__file__)), "docker", "envoy.Dockerfile")
    with open(dockerfile) as f:
        found = re.findall(r"^COPY\b.*\s(/\S+\.wasm)\s*$", f.read(), re.M)
    return found[0] if len(found) == 1 else f"<{len(found)} .wasm COPY lines in {dockerfile}>"


WASM_IN_IMAGE = wasm_in_image()


def walk_values(node, key):
    """Every value under `key`, anywhere in a parsed document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from walk_values(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from walk_values(v, key)


def arg_after(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def mounted_file(ctr, spec, path):
    """The (ConfigMap name, key) that `path` resolves to in this container, if any."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for m in ctr.get("volumeMounts", []):
        root = m["mountPath"].rstrip("/") + "/"
        if path.startswith(root) and "configMap" in volumes.get(m["name"], {}):
            return volumes[m["name"]]["configMap"]["name"], path[len(root):]
    return None


def check_pod_configs(c, where, spec, configmaps):
    """The files the containers are told to load are the ConfigMaps' files,
    and the ports in them agree with the pod's ports and with each other."""
    ctrs = {x["name"]: x for x in spec["containers"]}
    envoy, sidecar = ctrs.get("envoy", {}), ctrs.get("sidecar", {})
    ports = {p["name"]: p["containerPort"] for x in spec["containers"] for p in x.get("ports", [])}
    loaded = {}
    for ctr, flag in ((envoy, "--config-path"), (sidecar, "--config")):
        path = arg_after(ctr.get("args", []), flag) or arg_after(ctr.get("command", []), flag)
        src = mounted_file(ctr, spec, path) if path else None
        if not src or src[0] not in configmaps or src[1] not in (configmaps[src[0]].get("data") or {}):
            c.fail(where, f"container {ctr.get('name')} loads {path}, which is no key of a mounted ConfigMap")
            continue
        loaded[ctr["name"]] = yaml.safe_load(configmaps[src[0]]["data"][src[1]]) or {}
    if len(loaded) < 2:
        return
    ev, sc = loaded["envoy"], loaded["sidecar"]
    listen = sc.get("listen") or {}
    tokens = str(listen.get("tokens", "127.0.0.1:15001"))
    probes = str(listen.get("probes", "0.0.0.0:15021"))
    c.expect(int(probes.rsplit(":", 1)[1]) == ports.get("probes"), where,
             f"sidecar.yaml listen.probes {probes} is not the container's probes port {ports.get('probes')}")
    public = [int(a.get("port_value", 0)) for l in (ev.get("static_resources") or {}).get("listeners", [])
              for a in walk_values(l.get("address", {}), "socket_address")
              if a.get("address") in ("0.0.0.0", "::")]
    c.expect(public == [ports.get("http")], where,
             f"envoy.yaml listens publicly on {public}, want only the container's http port {ports.get('http')}")
    admin = [a.get("address") for a in walk_values(ev.get("admin") or {}, "socket_address")]
    c.expect(admin and all(a in ("127.0.0.1", "::1") for a in admin), where,
             f"envoy.yaml admin must bind loopback only, got {admin}")
    clusters = {cl.get("name"): cl for cl in (ev.get("static_resources") or {}).get("clusters", [])}
    sidecar_eps = [f"{a.get('address')}:{a.get('port_value')}"
                   for a in walk_values(clusters.get("sidecar", {}), "socket_address")]
    c.expect(sidecar_eps == [tokens], where,
             f"envoy.yaml cluster 'sidecar' points at {sidecar_eps}, but sidecar.yaml serves tokens on {tokens}")
    check_cache_store(c, where, spec, envoy, ev)
    wasm = {f for code in walk_values(ev, "code") for f in walk_values(code, "filename")}
    c.expect(wasm == {WASM_IN_IMAGE}, where,
             f"envoy.yaml loads Wasm from {sorted(wasm)}; the envoy image bakes it at {WASM_IN_IMAGE}")
    # Caller identity: the cluster's proxy authenticates its callers, and
    # every tenant names who may use it.
    modes = []
    for cfg in walk_values(ev, "config"):
        # The filter roles that decide who the caller is: the injector, and
        # the response cache's gate in front of cache_v2 (envoy/cache.yaml).
        if isinstance(cfg, dict) and cfg.get("root_id") in ("bearer_injector", "tenant_gate"):
            value = ((cfg.get("configuration") or {}).get("value")) or "{}"
            modes.append((json.loads(value).get("identity") or {}).get("mode"))
    c.expect(modes and all(m in ("jwt", "mtls") for m in modes), where,
             f"envoy.yaml's caller-facing filter identity modes are {modes}; the cluster needs jwt or mtls")
    for tenant, t in (sc.get("tenants") or {}).items():
        c.expect((t or {}).get("callers"), where,
                 f"sidecar.yaml tenant {tenant} has no callers: no authenticated caller could use it")

    check_shutdown(c, where, spec, envoy, sidecar, ev, sc)


def quantity_bytes(q):
    """A Kubernetes quantity such as 1Gi or 500M, in bytes (None if unparsable)."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        return None
    unit = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9,
            "T": 10**12}.get(m.group(2), 1)
    return int(m.group(1)) * unit


def check_cache_store(c, where, spec, envoy, ev):
    """A file-system response cache (envoy/cache.yaml) writes only to an emptyDir
    with a sizeLimit, and its max_cache_size_bytes stays below that limit."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in envoy.get("volumeMounts", [])}
    for store in walk_values(ev, "typed_config"):
        if not isinstance(store, dict) or "file_system_http_cache" not in str(store.get("@type", "")):
            continue
        path = str(store.get("cache_path", "")).rstrip("/")
        vol = volumes.get(mounts.get(path, ""), {})
        limit = quantity_bytes((vol.get("emptyDir") or {}).get("sizeLimit", ""))
        c.expect(limit is not None, where,
                 f"the response cache at {path!r} must be an emptyDir volume with a sizeLimit mounted there")
        size = int(store.get("max_cache_size_bytes") or 0)
        c.expect(limit is None or 0 < size < limit, where,
                 f"max_cache_size_bytes {size} must be set and below the cache volume's sizeLimit {limit}")



def seconds(text):
    """A humantime duration as the sidecar's config writes them (30s, 1m, 500ms)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*", str(text))
    if not m:
        return None
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def prestop_sleep(ctr):
    return (((ctr.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)


def check_shutdown(c, where, spec, envoy, sidecar, ev, sc):
    """Shutdown timings agree: the sidecar drains the Envoy whose admin it
    names, Envoy's drain time is the sidecar's drain timeout, Envoy's SIGTERM
    (its preStop) comes only after the sidecar could have drained it, and
    the grace period outlasts both."""
    sd = sc.get("shutdown") or {}
    admin = [f"{a.get('address')}:{a.get('port_value')}"
             for a in walk_values(ev.get("admin") or {}, "socket_address")]
    c.expect([sd.get("envoy_admin")] == admin, where,
             f"sidecar.yaml shutdown.envoy_admin {sd.get('envoy_admin')} is not envoy.yaml's admin {admin}")
    drain, serve_max = seconds(sd.get("drain_timeout", "30s")), seconds(sd.get("serve_max", "40s"))
    args = envoy.get("args", [])
    c.expect(arg_after(args, "--drain-strategy") == "immediate", where,
             "envoy must run with --drain-strategy immediate (every connection told to close at once)")
    dts = arg_after(args, "--drain-time-s")
    c.expect(dts is not None and drain is not None and float(dts) == drain, where,
             f"envoy --drain-time-s {dts} must equal sidecar.yaml shutdown.drain_timeout ({drain} s)")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    side_pre, envoy_pre = prestop_sleep(sidecar), prestop_sleep(envoy)
    if drain is not None and serve_max is not None:
        c.expect(serve_max >= drain, where, "shutdown.serve_max must cover shutdown.drain_timeout")
        c.expect(envoy_pre >= side_pre + drain, where,
                 f"envoy preStop {envoy_pre}s must outlast the sidecar's preStop {side_pre}s + drain {drain}s")
        c.expect(grace > envoy_pre and grace >= side_pre + serve_max, where,
                 f"terminationGracePeriodSeconds {grace} must exceed envoy's preStop {envoy_pre}s "
                 f"and the sidecar's preStop {side_pre}s + serve_max {serve_max}s")


def check_indexed_job(c, where, obj):
    spec = job_spec(obj)
    if spec.get("completionMode") != "Indexed":
        return
    args = " ".join(pod_spec(obj)["containers"][0].get("args", []))
    m = re.search(r"\$\(JOB_COMPLETION_INDEX\)/(\d+)", args)
    c.expect(m is not None, where, "an Indexed Job must pass --shard $(JOB_COMPLETION_INDEX)/N")
    if m:
        n = int(m.group(1))
        c.expect(spec.get("completions") == n, where,
                 f"completions ({spec.get('completions')}) must equal the shard count ({n})")


def check_file(c, path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    kinds = {}
    images = {}
    configmap_objs = {o["metadata"]["name"]: o for o in docs if o["kind"] == "ConfigMap"}
    configmaps = set(configmap_objs)
    api_users(c, path, docs)
    for obj in docs:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("sidecar-config"):
            SIDECAR_CONFIGS[path] = (obj.get("data") or {}).get("sidecar.yaml", "")
    for obj in docs:
        kind, name = obj["kind"], obj["metadata"]["name"]
        where = f"{path}: {kind}/{name}"
        kinds.setdefault(kind, []).append(obj)
        if kind != "Namespace":
            c.expect(obj["metadata"].get("namespace"), where, "has no namespace")
        if kind == "Secret":
            c.fail(where, "Secrets are created out of band and never rendered from the repository")
        if kind == "Ingress":
            c.fail(where, "no Ingress: the proxy is cluster-internal")
        if kind == "Service":
            c.expect(obj["spec"].get("type", "ClusterIP") == "ClusterIP", where, "Service type must be ClusterIP")
        if kind in POD_OWNERS:
            check_pod(c, where, obj)
            check_importer(c, where, pod_spec(obj))
            for cm in configmap_refs(pod_spec(obj)):
                c.expect(cm in configmaps, where, f"refers to ConfigMap {cm}, which is not rendered here")
            for ctr in pod_spec(obj)["containers"]:
                images.setdefault(ctr["image"].rsplit(":", 1)[0], set()).add(ctr["image"])
        if kind in ("Job", "CronJob"):
            js = job_spec(obj)
            c.expect(pod_spec(obj).get("restartPolicy") == "Never", where, "restartPolicy must be Never")
            c.expect("backoffLimit" in js or "backoffLimitPerIndex" in js, where, "backoffLimit must be set")
            c.expect("activeDeadlineSeconds" in js, where, "activeDeadlineSeconds must be set")
            check_indexed_job(c, where, obj)
        if kind == "CronJob":
            c.expect(obj["spec"].get("concurrencyPolicy") == "Forbid", where, "concurrencyPolicy must be Forbid")
        if kind == "Deployment" and name == "auth-proxy":
            check_auth_proxy(c, where, obj)
            check_pod_configs(c, where, pod_spec(obj), configmap_objs)
        if kind == "NetworkPolicy" and name == "auth-proxy":
            c.expect(set(obj["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}, where,
                     "must restrict both Ingress and Egress")
            for rule in obj["spec"].get("egress", []):
                ports = {p.get("port") for p in rule.get("ports") or [{}]}
                c.expect(ports <= AUTH_PROXY_EGRESS_PORTS, where,
                         f"egress allows ports {sorted(map(str, ports))}; only DNS (53) and 443 are allowed")
            for rule in obj["spec"].get("ingress", []):
                c.expect(rule.get("from"), where, "every ingress rule must name its sources")
        if kind == "NetworkPolicy" and name == "auth-proxy-redis":
            c.expect(set(obj["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}, where,
                     "Redis holds tokens: restrict both Ingress and Egress")
            c.expect(not obj["spec"].get("egress"), where, "Redis needs no egress")
            for rule in obj["spec"].get("ingress", []):
                c.expect(rule.get("from") == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "auth-proxy"}}}],
                         where, "only the auth-proxy pods may reach Redis")
        if kind == "ConfigMap":
            data = obj.get("data") or {}
            if name.startswith("envoy-config"):
                c.expect("envoy.yaml" in data, where, "must carry envoy.yaml")
            if name.startswith("sidecar-config"):
                c.expect("sidecar.yaml" in data, where, "must carry sidecar.yaml")
    # The importer asks the proxy for tenants by id; the sidecar must hold them.
    importer_cm = next((o for o in docs if o["kind"] == "ConfigMap"
                        and o["metadata"]["name"] == "importer-config"), None)
    if importer_cm and path in SIDECAR_CONFIGS:
        wanted = {t.strip() for t in (importer_cm.get("data") or {}).get("IMPORTER_TENANTS", "").split(",") if t.strip()}
        known = set((yaml.safe_load(SIDECAR_CONFIGS[path]) or {}).get("tenants") or {})
        c.expect(wanted, path, "importer-config has no IMPORTER_TENANTS")
        for t in sorted(wanted - known):
            c.fail(path, f"IMPORTER_TENANTS names {t!r}, which sidecar.yaml has no credentials for")
    for repo, tags in images.items():
        c.expect(len(tags) == 1, path, f"{repo} is used at several tags: {sorted(tags)}")
    # A Redis in the namespace (overlays/*-shared) must be fenced off.
    redis = [o for o in kinds.get("StatefulSet", []) + kinds.get("Deployment", [])
             if o["metadata"]["name"] == "auth-proxy-redis"]
    if redis:
        c.expect(any(o["metadata"]["name"] == "auth-proxy-redis" for o in kinds.get("NetworkPolicy", [])), path,
                 "Redis is rendered without NetworkPolicy auth-proxy-redis")
    if any(d["metadata"]["name"] == "auth-proxy" for d in kinds.get("Deployment", [])):
        for k in ("Namespace", "Service", "NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                  "CronJob"):
            c.expect(k in kinds, path, f"no {k} rendered")
        cms = [o["metadata"]["name"] for o in kinds.get("ConfigMap", [])]
        for want in ("envoy-config", "sidecar-config"):
            c.expect(any(n.startswith(want) for n in cms), path, f"no {want} ConfigMap rendered, got {cms}")


def main(paths):
    c = Checker()
    for p in paths:
        check_file(c, p)
    for line in c.problems:
        print(line)
    return 1 if c.problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
