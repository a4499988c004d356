#!/usr/bin/env python3
"""Derives the opt-in cache configs from the plain ones, so they never drift:

    envoy/envoy.yaml  -> envoy/cache.yaml        (production)
    envoy/local.yaml  -> envoy/cache-local.yaml  (local, tests)

    python3 envoy/derive_cache.py          # rewrite both
    python3 envoy/derive_cache.py --check  # exit 1 if either is out of step

Everything of the plain config is kept (identity, method allow-list, header
stripping, audit log, TLS to the upstream); the cache layout is added as text
edits at fixed anchors, and the script fails loudly if an anchor moved:
- the internal_listener bootstrap extension;
- the audit log gains `details` (a hit: cache.response_from_cache_filter)
  and `age`;
- the `cache` virtual host, whose guarded route leads to the internal
  listener, before the catch-all;
- `bearer_injector` becomes `tenant_gate` (same configuration plus `cache`),
  followed by `cache_v2` on the file-system store;
- the internal listener `cache_fill` (the `cache_fill` filter, then a router
  with the direct route's host rewrite, timeout and retries);
- the upstream header_mutation also removes `x-authproxy-cache-ttl`;
- the `cache_fill` cluster.
"""
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CACHE_POLICY = {"only_configured": True, "routes": [
    {"path_prefix": "/v1/reference/", "ttl": "5m"},
    {"path_prefix": "/exports/", "ttl": "1h", "methods": ["GET"]},
]}

VARIANTS = {
    "cache.yaml": {
        "base": "envoy.yaml",
        "cache_path": "/var/cache/authproxy",
        "max_bytes": 805306368,
        "store_comment": [
            "# The emptyDir \"envoy-cache\" (sizeLimit 1Gi); the",
            "# cache evicts least recently used entries above",
            "# 768 MiB, well before the kubelet would evict the pod.",
        ],
        "header": """\
# Production auth proxy WITH the opt-in response cache (issue 13).
# GENERATED from envoy/envoy.yaml by envoy/derive_cache.py: edit envoy.yaml
# (or the script) and rerun it; deploy/validate.sh fails while this file is
# out of step. Choose one of the two per deployment
# (deploy/k8s/overlays/prod-cache uses this one).
#
# Why this layout (established on Envoy 1.40, see README "Response cache"):
# cache_v2 fetches misses through its own side channel straight to the
# route's cluster, skipping the filters after it and route-level mutations;
# requests that carry Authorization are never cached; Vary cannot isolate
# tenants. So the tenant goes into the cache key through :authority, and the
# token is injected only behind the cache, on an internal listener:
# - listener "ingress": everything of envoy.yaml up to the filter, whose
#   `tenant_gate` role makes the injector's whole decision (identity,
#   tenant, allow-list, token; refusals as in envoy.yaml), so nothing refused
#   reaches the cache; a cacheable request then leaves without authorization
#   and with :authority <tenant>.tenant.authproxy.invalid; cache_v2 on the
#   file-system store (an emptyDir with a sizeLimit at /var/cache/authproxy);
#   router. Cacheable requests route to the internal listener; every other
#   request keeps its token and goes direct, as in envoy.yaml (no extra hop).
# - internal listener "cache_fill": the `cache_fill` role (tenant from the
#   authority only, token injected, `cache-control: max-age=TTL` on a 200 and
#   `no-store` on anything else); router with the direct route's host
#   rewrite, timeout and retries. The upstream cluster (TLS, header
#   stripping) is the same for both paths.
# What is cached: the `cache.routes` of the tenant_gate configuration (GET
# and HEAD, by path prefix, with a TTL); nothing else ("only_configured").
#
""",
    },
    "cache-local.yaml": {
        "base": "local.yaml",
        "cache_path": ".state/cache",
        "max_bytes": 67108864,
        "pin_host": "api.example.com",
        "store_comment": ["# Relative to where Envoy runs: create it first."],
        "header": """\
# Local and demo auth proxy WITH the opt-in response cache: envoy/local.yaml
# in the layout of envoy/cache.yaml (read that for the reasons).
# GENERATED from envoy/local.yaml by envoy/derive_cache.py: edit local.yaml
# (or the script) and rerun it. Run from the repository root after
# `mkdir -p .state/cache`. The end-to-end tests (tests/tests/cache.rs) load
# this file and rewrite only ports, the .wasm path and the cache directory,
# so what they test is what this file says.
#
""",
    },
}


def fail(msg):
    sys.exit(f"derive_cache.py: {msg}")


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def block_end(lines, start):
    """Index after the YAML block that starts at `start`: the first later
    non-blank line indented no deeper than it."""
    ind = indent_of(lines[start])
    i = start + 1
    while i < len(lines) and (not lines[i].strip() or indent_of(lines[i]) > ind):
        i += 1
    return i


def find(lines, pattern, start=0, what=None):
    for i in range(start, len(lines)):
        if re.search(pattern, lines[i]):
            return i
    fail(f"anchor not found: {what or pattern}")


def derive(text, v):
    lines = text.split("\n")
    # Drop the plain config's header comment.
    first = find(lines, r"^admin:")
    lines = lines[first:]

    # The injector's filter and the router, as the plain config has them:
    # the internal listener gets copies.
    inj = find(lines, r"^\s+root_id: bearer_injector$", what="the bearer_injector filter")
    wasm_item = inj
    while not lines[wasm_item].lstrip().startswith("- name: envoy.filters.http.wasm"):
        wasm_item -= 1
    fp = " " * indent_of(lines[wasm_item])
    wasm_block = lines[wasm_item:block_end(lines, wasm_item)]
    router = find(lines, r"^\s+- name: envoy.filters.http.router$", inj, "the router filter")
    router_block = lines[router:block_end(lines, router)]
    while not router_block[-1].strip():
        router_block.pop()

    # 1. internal_listener bootstrap extension, after the fetcher's config.
    i = block_end(lines, find(lines, r"^bootstrap_extensions:$", what="bootstrap_extensions"))
    j = i
    while j > 0 and not lines[j - 1].strip():
        j -= 1
    lines[j:j] = [
        "  - name: envoy.bootstrap.internal_listener",
        "    typed_config:",
        '      "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener',
    ]

    # 2. audit log: details and age.
    i = find(lines, r'^\s+flags: "%RESPONSE_FLAGS%"', what="access log flags field")
    pad = " " * indent_of(lines[i])
    extra = []
    if not any('"%RESPONSE_CODE_DETAILS%"' in l for l in lines):
        extra.append(f'{pad}details: "%RESPONSE_CODE_DETAILS%"')
    extra += [f"{pad}# A hit: details cache.response_from_cache_filter",
              f"{pad}# and an age; a fill: cache.insert_via_upstream.",
              f'{pad}age: "%RESP(AGE)%"']
    lines[i + 1:i + 1] = extra

    # 3. the cache virtual host before the catch-all one.
    vh = find(lines, r"^\s+virtual_hosts:", what="virtual_hosts")
    api = find(lines, r"^\s+- name: api$", vh, "virtual host api")
    api_end = block_end(lines, api)
    api_block = lines[api:api_end]
    r = next((k for k, l in enumerate(api_block) if re.match(r"\s+- match: \{ prefix: \"/\" \}", l)), None)
    if r is None:
        fail('the api virtual host has no `- match: { prefix: "/" }` route')
    route = api_block[r:]
    if not any("host_rewrite_literal" in l for l in route):
        # The tenant's authority must never reach the upstream: pin the Host
        # on every route (local.yaml forwards the caller's).
        route = [re.sub(r"timeout: (\w+) \}", rf"timeout: \1, host_rewrite_literal: {v['pin_host']} }}", l)
                 for l in route]
        if not any("host_rewrite_literal" in l for l in route):
            fail("cannot pin the Host on the api route")
        # ... on the plain route too.
        lines[api + r:api_end] = route
        api_end = api + len(api_block)
    p = " " * indent_of(api_block[0])
    rp = " " * indent_of(route[0])
    cache_vh = [
        f"{p}# Only the gate writes these authorities, and only on requests it",
        f"{p}# stripped of authorization. A caller who sends one gets it on a",
        f"{p}# request that carries our token, which matches the second route:",
        f"{p}# direct. (cache_fill also refuses a request with authorization.)",
        f"{p}- name: cache",
        f'{p}  domains: ["*.tenant.authproxy.invalid"]',
        f"{p}  routes:",
        f"{rp}- match:",
        f'{rp}    prefix: "/"',
        f"{rp}    headers:",
        f"{rp}      - name: authorization",
        f"{rp}        present_match: false",
    ]
    timeout = next((re.search(r"timeout: (\w+)", l).group(1) for l in route if "timeout:" in l), "60s")
    cache_vh.append(f"{rp}  route: {{ cluster: cache_fill, timeout: {timeout} }}")
    cache_vh += route
    lines[api:api] = cache_vh

    # 4. bearer_injector becomes tenant_gate, then cache_v2.
    i = find(lines, r"^\s+name: bearer_injector$", what="the bearer_injector filter")
    lines[i] = lines[i].replace("bearer_injector", "tenant_gate")
    k = find(lines, r"^\s+root_id: bearer_injector$", i)
    lines[k] = lines[k].replace("bearer_injector", "tenant_gate")
    c = find(lines, r"^\s+value: \|$", k, "the injector's configuration")
    cfg_line = lines[c + 1]
    cfg = json.loads(cfg_line)
    gate_cfg = dict(cfg, cache=CACHE_POLICY)
    cp = " " * indent_of(cfg_line)
    lines[c + 1] = cp + json.dumps(gate_cfg)
    conf = find(lines, r"^\s+configuration:$", k)
    cpad = " " * indent_of(lines[conf])
    lines[conf:conf] = [
        f"{cpad}# `cache.routes`: what is cached and for how long (longest",
        f"{cpad}# matching prefix wins; GET and HEAD only; ttl like \"300s\",",
        f"{cpad}# \"5m\", \"1h\", at most 7 days).",
    ]
    router = find(lines, r"^\s+- name: envoy.filters.http.router$", k, "the router filter")
    store = [f"{fp}        {l}" for l in v["store_comment"]]
    lines[router:router] = [
        f"{fp}- name: envoy.filters.http.cache_v2",
        f"{fp}  typed_config:",
        f'{fp}    "@type": type.googleapis.com/envoy.extensions.filters.http.cache_v2.v3.CacheV2Config',
        f"{fp}    # A caller's `cache-control: no-cache` must not make the",
        f"{fp}    # proxy spend the tenant's rate limit.",
        f"{fp}    ignore_request_cache_control_header: true",
        f"{fp}    typed_config:",
        f'{fp}      "@type": type.googleapis.com/envoy.extensions.http.cache_v2.file_system_http_cache.v3.FileSystemHttpCacheV2Config',
        f"{fp}      manager_config:",
        f"{fp}        thread_pool: {{ thread_count: 1 }}",
    ] + [s.replace(f"{fp}        #", f"{fp}      #", 1) for s in store] + [
        f"{fp}      cache_path: {v['cache_path']}",
        f"{fp}      max_cache_size_bytes: {v['max_bytes']}",
    ]

    # 5. the internal listener, after the ingress listener.
    cl = find(lines, r"^  clusters:$", what="clusters")
    j = cl
    while not lines[j - 1].strip():
        j -= 1
    fill_cfg = {k2: v2 for k2, v2 in cfg.items() if k2 != "identity"}
    fill_cfg["authority_suffix"] = "tenant.authproxy.invalid"
    fill_wasm = [l.replace("bearer_injector", "cache_fill") for l in wasm_block]
    fill_wasm = [(cp + json.dumps(fill_cfg)) if l == cfg_line else l for l in fill_wasm]
    # Re-indent the filter blocks from the ingress depth (fp) to the fill's.
    def reindent(block, to):
        cut = len(fp)
        return [(to + l[cut:]) if l.strip() else l for l in block]
    f6 = " " * 18
    route_cut = indent_of(route[0])
    fill_route = [(" " * 24 + l[route_cut:]) if l.strip() else l for l in route]
    listener = [
        "",
        "    - name: cache_fill",
        "      internal_listener: {}",
        "      filter_chains:",
        "        - filters:",
        "            - name: envoy.filters.network.http_connection_manager",
        "              typed_config:",
        '                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
        "                stat_prefix: cache_fill",
        "                generate_request_id: false",
        "                # Every local reply here (a refusal, no upstream) is final",
        "                # for that request and must never be stored.",
        "                local_reply_config:",
        "                  mappers:",
        "                    - filter:",
        "                        status_code_filter:",
        "                          comparison:",
        "                            op: GE",
        "                            value: { default_value: 100, runtime_key: authproxy.cache_fill.no_store_from }",
        "                      headers_to_add:",
        "                        - header: { key: cache-control, value: no-store }",
        "                          append_action: OVERWRITE_IF_EXISTS_OR_ADD",
        "                route_config:",
        "                  name: fill",
        "                  virtual_hosts:",
        "                    - name: fill",
        '                      domains: ["*"]',
        "                      routes:",
    ] + fill_route + [
        "                http_filters:",
    ] + reindent(fill_wasm, f6) + reindent(router_block, f6)
    lines[j:j] = listener

    # 6. the upstream header_mutation also drops the gate's TTL header.
    i = find(lines, r"^\s+request_mutations:$", what="the upstream header_mutation")
    pad = " " * (indent_of(lines[i]) + 2)
    lines[i + 1:i + 1] = [f"{pad}- remove: x-authproxy-cache-ttl"]

    # 7. the cache_fill cluster.
    while lines and not lines[-1].strip():
        lines.pop()
    lines += [
        "",
        "    # The internal listener above; the cache's side channel fills through it.",
        "    - name: cache_fill",
        "      connect_timeout: 1s",
        "      load_assignment:",
        "        cluster_name: cache_fill",
        "        endpoints:",
        "          - lb_endpoints:",
        "              - endpoint:",
        "                  address:",
        "                    envoy_internal_address: { server_listener_name: cache_fill }",
        "",
    ]
    return v["header"] + "\n".join(lines)


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, v in VARIANTS.items():
        with open(os.path.join(HERE, v["base"])) as f:
            out = derive(f.read(), v)
        path = os.path.join(HERE, name)
        old = open(path).read() if os.path.exists(path) else None
        if old != out:
            if check:
                stale.append(name)
            else:
                with open(path, "w") as f:
                    f.write(out)
                print(f"updated envoy/{name} from envoy/{v['base']}")
    if stale:
        fail(f"envoy/{', envoy/'.join(stale)} out of step with their plain configs: "
             "run python3 envoy/derive_cache.py and commit")


if __name__ == "__main__":
    main()
