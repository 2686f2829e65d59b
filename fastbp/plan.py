"""Step plans: a network's compiled passes for batches of one size, their arguments
gathered once.

Every compiled pass of a network takes the same long argument list: the parameters
(and gradients), the seven layout arrays (NetworkLayout.compiled_args), the loss code,
the batch, the three activation workspaces, and for training the optimizer's state. A
``StepPlan`` holds those for one (network, batch size): built once, when the batch
size is first seen (the workspace grows to it then), and again only when a buffer it
holds is replaced (assigned parameters, a larger batch growing the shared workspace;
``net.to`` drops every plan). It is
the one place that knows each pass's argument order, for the CPU kernels and their
CUDA twins alike (kernels/cuda takes the same lists): ``MLP``'s passes, ``fit``,
``jacobian``, the layer-by-layer backward (fastbp.overlap), the scikit-learn solvers,
``warmup`` (which compiles for a plan's argument types) and the CUDA training runner
(fastbp.cuda_plan) all call through one.

On device="cuda" a plan also places host batches on the GPU (the network's
``device.Staging``: reused device buffers) before a pass, and its ``train_epoch``
uploads a host data set once (fastbp.cuda_plan.CudaRunner.epoch_data). ``MLP.train_step``
on "cuda" launches from fastbp.cuda_plan's launch plans, which are built from a
StepPlan's arguments (a distributed step, which all-reduces between backward and the
update, goes through the plan's own passes).

The arguments (shapes for a batch of ``batch`` rows; L layers):
    params, grads   (n_params,) the network's dtype
    layout          sizes (L+1,), w_off, b_off, act_codes (L,) int64, slopes (L,)
                    float64, act_cum (L+1,), pre_cum (L,) int64 (fastbp.layout)
    loss_code       int (kernels/codes.py)
    X               (batch, sizes[0]); labels (batch,) int64 or empty; targets
                    (batch, sizes[-1]) or empty (the one the loss ignores is empty)
    acts, pres, dbuf  the network's flat workspaces (fastbp.layout.Workspace)
    opt             (code, state (k, n_params), hparams (m,) float64, step number):
                    Optimizer.compiled_args_for's last four but params and grads
"""
from .layout import Workspace


class StepPlan:
    """One network's compiled passes for batches of ``batch`` rows (module docstring).

    ``workspace``: the activation buffers to use (default: the network's own, grown
    to ``batch`` rows if needed; ``warmup`` passes fresh one-row buffers so that it
    compiles without touching the network's).
    """

    def __init__(self, net, batch, workspace=None):
        self.net = net
        self.workspace = net._workspace if workspace is None else workspace
        self.acts, self.pres, self.dbuf = self.workspace.ensure(batch)
        self.layout = net.layout.compiled_args()
        self.params, self.grads = net.params, net.grads
        # the argument lists' fixed heads and tails, around the batch
        self._fwd = (net.params, *self.layout)
        self._with_loss = (net.params, *self.layout, net._loss_code)
        self._with_grads = (net.params, net.grads, *self.layout, net._loss_code)
        self._ws = (self.acts, self.pres)
        self._ws3 = (self.acts, self.pres, self.dbuf)
        self._staging = net._staging   # None on the CPU
        self._training = {}   # optimizer code -> the passes that train with it

    def current(self):
        """Whether the network still holds the buffers this plan was built with (its
        parameters and gradients may be replaced by assignment, its workspace grows
        for a larger batch; ``net.to`` drops every plan)."""
        net = self.net
        return (self.params is net.params and self.grads is net.grads
                and self.acts is self.workspace.acts)

    # -- argument lists, in the compiled passes' order ---------------------------------
    def forward_args(self, X):
        """network_forward's arguments."""
        return (*self._fwd, X, *self._ws)

    def loss_args(self, X, labels, targets):
        """network_loss's arguments."""
        return (*self._with_loss, X, labels, targets, *self._ws3)

    def backward_args(self, X, labels, targets):
        """network_backward's arguments (and the head of network_train_step's)."""
        return (*self._with_grads, X, labels, targets, *self._ws3)

    def train_step_args(self, X, labels, targets, opt):
        """network_train_step's arguments; ``opt`` as in the module docstring."""
        return (*self._with_grads, X, labels, targets, *self._ws3, *opt)

    def train_epoch_args(self, X, labels, targets, batch_size, opt, losses):
        """network_train_epoch's arguments: X, labels, targets the whole epoch's rows
        (the plan's batch is the minibatch), ``losses`` (steps,) float64."""
        return (*self._with_grads, X, labels, targets, batch_size, *self._ws3, *opt,
                losses)

    def backprop_args(self, X, dX):
        """backprop's arguments (after a forward: the output gradient in dbuf's first
        batch * sizes[-1] entries); ``dX`` (batch, sizes[0]), or (0, 0) to skip it."""
        return (self.params, self.grads, *self.layout, X, *self._ws3, dX)

    def jacobian_args(self, X, grads, dX, J):
        """network_jacobian's (and kernels.cpu.jacobian.jacobian_pass's) arguments."""
        return (*self._fwd, X, *self._ws3, grads, dX, J)

    def training_passes(self, opt_code):
        """The network's passes that train with the optimizer of code ``opt_code``
        (``MLP._training_kernels``), asked once per code: the answer, once given, stays
        the same for the network's device, activation set and that code
        (kernels/cpu/network.py, ``training_passes``), and ``net.to`` drops every
        plan; code that replaces ``net._kernels`` must clear ``net._plans`` too. Asking
        on every step cost 0.4-0.7 us of a 64-64-10 step's 32 us (benchmarks/README.md,
        "The tiny step's Python")."""
        passes = self._training.get(opt_code)
        if passes is None:
            passes = self._training[opt_code] = self.net._training_kernels(opt_code)
        return passes

    # -- the passes --------------------------------------------------------------------
    def place(self, X, labels=None, targets=None):
        """(X, labels, targets) where this device's kernels read them: as given on the
        CPU; on "cuda", host arrays copied into the network's reused device buffers
        (labels and targets None: the network's empty ones)."""
        if self._staging is None:
            return X, labels, targets
        net = self.net
        if labels is None:
            labels, targets = net._no_labels, net._no_targets
        return self._staging.put(X, labels, targets)

    def forward(self, X):
        """The last layer's output, (batch, sizes[-1]), left in the workspace (a view:
        the next pass overwrites it)."""
        X = self.place(X)[0]
        return self.net._kernels.network_forward(*self.forward_args(X))

    def loss(self, X, labels, targets):
        """The mean loss as a float; its output gradient is left in dbuf."""
        X, labels, targets = self.place(X, labels, targets)
        return float(self.net._kernels.network_loss(*self.loss_args(X, labels, targets)))

    def backward(self, X, labels, targets):
        """Forward and backward: fills the network's grads; returns the loss (float)."""
        X, labels, targets = self.place(X, labels, targets)
        return float(self.net._kernels.network_backward(
            *self.backward_args(X, labels, targets)))

    def train_step(self, X, labels, targets, optimizer):
        """One training step (forward, loss, backward, ``optimizer``'s update) in one
        compiled call: (loss before the update, how many parameters the update left
        NaN or infinite). The arguments come from this plan: a 64-64-10 step is about
        30 us, and every tenth of a microsecond of Python around it shows."""
        net = self.net
        opt_code, _, _, state, hparams, step = optimizer.compiled_args_for(net)
        if self._staging is not None:
            X, labels, targets = self.place(X, labels, targets)
        loss, nonfinite = self.training_passes(opt_code).network_train_step(
            *self.train_step_args(X, labels, targets, (opt_code, state, hparams, step)))
        return float(loss), int(nonfinite)

    def train_epoch(self, X, labels, targets, batch_size, optimizer, losses):
        """The kernels' network_train_epoch over the rows of (X, labels, targets) in
        minibatches of ``batch_size`` (this plan's batch, or the whole of X when it
        has fewer rows): fills ``losses``, advances the optimizer's step count,
        returns (steps run, non-finite count of the last update). On "cuda" a host
        data set is uploaded once and data on the GPU checked there first
        (fastbp.cuda_plan.CudaRunner.epoch_data)."""
        net = self.net
        if net.device == "cuda":
            from .cuda_plan import runner
            X, labels, targets = runner(net).epoch_data(X, labels, targets)
        opt_code, _, _, state, hparams, first = optimizer.compiled_args_for(net)
        ran, nonfinite = self.training_passes(opt_code).network_train_epoch(
            *self.train_epoch_args(X, labels, targets, batch_size,
                                   (opt_code, state, hparams, first), losses))
        optimizer.steps += ran - 1   # compiled_args_for counted the first step
        return ran, nonfinite


def plan_for(net, batch):
    """``net``'s StepPlan for batches of ``batch`` rows, built on first use and when a
    buffer it holds was replaced. A network keeps the plans of its last few batch sizes
    (``MAX_PLANS``): scoring or predicting in chunks of ever new sizes builds a plan
    for each, which costs microseconds, and keeping them all would keep nothing
    useful."""
    plans = net._plans
    plan = plans.get(batch)
    if plan is None or not plan.current():
        plan = StepPlan(net, batch)   # grows the workspace for a larger batch
        # a plan built on buffers since replaced would keep them alive: drop those
        for stale in [b for b, p in plans.items() if not p.current()]:
            del plans[stale]
        if len(plans) >= MAX_PLANS:
            plans.clear()
        plans[batch] = plan
    return plan


MAX_PLANS = 8


def one_row_plan(net):
    """A StepPlan for one row on fresh buffers of its own: what ``warmup`` compiles
    for (the argument types of every real call, which do not depend on the batch
    size), without growing or touching the network's workspace."""
    return StepPlan(net, 1, Workspace(net.layout, net.dtype))
