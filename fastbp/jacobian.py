"""The Jacobian of a network's outputs with respect to its inputs."""
from . import device as _device
from .concurrency import using
from .kernels.cpu.jacobian import jacobian_pass
from .plan import plan_for


def jacobian(net, X):
    """d net.forward(X) / d X for every row of X, computed by backpropagation.

    Parameters
    ----------
    net : fastbp.MLP
    X : (batch, sizes[0]) float or integer array (converted as for ``net.forward``).

    Returns
    -------
    J : (batch, sizes[-1], sizes[0]) array of ``net.dtype`` with
        ``J[i, k, j] = d out[i, k] / d X[i, j]``, where ``out = net.forward(X)`` is the
        last layer's output (the logits, for the logit losses; the loss is not part of
        it).

    Rows do not interact, so for each output k a single backward pass from the output
    gradient e_k (one-hot in column k on every row) yields column k of all the rows'
    Jacobians: one forward and ``sizes[-1]`` backward passes, all in one compiled call
    (``fastbp.kernels.cpu.jacobian.network_jacobian``; on device="cuda" its twin in
    kernels/cuda, launched on the GPU, J copied back once). No finite differences are
    involved; the tests check the result against them. The network's parameters and
    its ``grads`` are left untouched.

    Example
    -------
    >>> net = fastbp.MLP([3, 5, 2], activation="tanh", dtype="float64", seed=0)
    >>> J = fastbp.jacobian(net, np.ones((4, 3)))
    >>> J.shape
    (4, 2, 3)
    """
    X = net._inputs(X)
    device = getattr(net, "device", "cpu")
    batch, n_in = X.shape
    shapes = ((net.n_params,), (batch, n_in), (batch, net.sizes[-1], n_in))
    grads, dX, J = (_device.empty(shape, net.dtype, device) for shape in shapes)
    with using(net, "jacobian"):   # it uses the network's workspaces
        plan = plan_for(net, batch)
        if device == "cpu":
            # compiled for the activation set the network's own passes were compiled for
            jacobian_pass(net._kernels.act_set)(*plan.jacobian_args(X, grads, dX, J))
            return J
        X = plan.place(X)[0]
        net._kernels.network_jacobian(*plan.jacobian_args(X, grads, dX, J))
    return _device.to_host(J)
