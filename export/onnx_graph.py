"""Rewrites of the ONNX graph tf2onnx writes, before it is saved (``deploy_formats.convert_onnx``).

The exported backbones build PReLU as ``relu(x) - alpha * relu(-x)`` (``model.layers.prelu``:
the form TF Lite fuses into its PRELU op and quantises well). tf2onnx has no rewriter for that
form and writes five ONNX nodes per PReLU (Relu, Neg, Relu, Mul, Sub): five passes over the
activation and four intermediate tensors, where ONNX has one ``PRelu`` op computing the same
values (``x`` where ``x >= 0``, else ``slope * x``) in one pass. :func:`fuse_prelu` puts it back.
"""


def _producers_and_consumers(graph):
    producers, consumers = {}, {}
    for node in graph.node:
        for name in node.output:
            producers[name] = node
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producers, consumers


def _only_consumer(consumers, tensor, node, graph_outputs):
    return tensor not in graph_outputs and [id(n) for n in consumers.get(tensor, [])] == [id(node)]


def _prelu_match(sub, producers, consumers, graph_outputs):
    """``(x, slope, nodes to remove)`` when ``sub`` ends ``relu(x) - slope * relu(-x)``,
    each intermediate used only there; else None."""
    if sub.op_type != "Sub" or len(sub.input) != 2:
        return None
    relu, mul = producers.get(sub.input[0]), producers.get(sub.input[1])
    if relu is None or mul is None or relu.op_type != "Relu" or mul.op_type != "Mul":
        return None
    for index in (0, 1):
        negative_relu = producers.get(mul.input[index])
        if negative_relu is not None and negative_relu.op_type == "Relu":
            slope = mul.input[1 - index]
            break
    else:
        return None
    neg = producers.get(negative_relu.input[0])
    if neg is None or neg.op_type != "Neg" or neg.input[0] != relu.input[0]:
        return None
    uses = ((relu.output[0], sub), (mul.output[0], sub), (negative_relu.output[0], mul),
            (neg.output[0], negative_relu))
    if not all(_only_consumer(consumers, tensor, node, graph_outputs) for tensor, node in uses):
        return None
    return relu.input[0], slope, (relu, neg, negative_relu, mul, sub)


def fuse_prelu(model_proto):
    """Replace every ``relu(x) - slope * relu(-x)`` of ``model_proto``'s graph (in place) by
    ``PRelu(x, slope)``; returns how many. The slope broadcasts to ``x`` as it did in the Mul
    (the Sub's output has ``x``'s shape), which is what PRelu's unidirectional broadcast needs.
    """
    import onnx  # noqa: PLC0415  (optional: the onnx extra)

    graph = model_proto.graph
    graph_outputs = {output.name for output in graph.output}
    producers, consumers = _producers_and_consumers(graph)
    replaced, removed = {}, set()
    for node in graph.node:
        match = _prelu_match(node, producers, consumers, graph_outputs)
        if match is None or any(id(n) in removed for n in match[2]):
            continue
        x, slope, nodes = match
        removed.update(id(n) for n in nodes)
        replaced[id(node)] = onnx.helper.make_node("PRelu", [x, slope], [node.output[0]],
                                                   name=node.name + "_prelu")
    if not replaced:
        return 0
    # The PRelu takes the Sub's place: after x and the slope, before every user of the output.
    kept = [replaced.get(id(node), node) for node in graph.node
            if id(node) in replaced or id(node) not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    return len(replaced)
