"""A key-value test guest (tests/tests/keyvalue.rs), through polytrace.keyvalue:

    POST /ops?store=NAME   [[op, args...], ...] run in order on the store
                           granted as NAME; answers each one's result, or
                           its error as {"error": kind, "message": ...}.
                           ops: open, get, set, delete, exists, increment,
                           get_many, set_many, delete_many, keys
                           (values are UTF-8 text here; get answers null
                           for no value)
    GET /big-key?store=NAME  set and get a key of 1 MiB (past the host's cap)
"""

import json

from polytrace import keyvalue
from polytrace.http import Request, respond
from wit_world import exports


def text(value):
    return None if value is None else value.decode("utf-8", "replace")


def run(store, op, args):
    if op == "get":
        return text(store.get(args[0]))
    if op == "set":
        return store.set(args[0], args[1])
    if op == "delete":
        return store.delete(args[0])
    if op == "exists":
        return store.exists(args[0])
    if op == "increment":
        return store.increment(args[0], *args[1:])
    if op == "get_many":
        return {k: text(v) for k, v in store.get_many(args[0]).items()}
    if op == "set_many":
        return store.set_many(args[0])
    if op == "delete_many":
        return store.delete_many(args[0])
    if op == "keys":
        return sorted(store.keys())
    raise ValueError(f"unknown op {op}")


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        request = Request(request)
        name = request.query.get("store", "cache")
        results = []
        if request.path == "/big-key":
            ops = [["set", "k" * (1 << 20), "v"], ["get", "k" * (1 << 20)], ["set", "small", "ok"], ["get", "small"]]
        else:
            ops = json.loads(request.body)
        store = None
        for op, *args in ops:
            try:
                if op == "open":
                    store = keyvalue.open(args[0] if args else name)
                    results.append(None)
                    continue
                if store is None:
                    store = keyvalue.open(name)
                results.append(run(store, op, args))
            except keyvalue.KeyValueError as e:
                results.append({"error": e.kind, "message": str(e)})
        respond(response_out, 200, "application/json", json.dumps(results).encode())
