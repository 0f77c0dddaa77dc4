/* sq_optim.h — first-order optimizers (SGD, AdamW) over a list of parameters.
 *
 * An sq_optim keeps a reference to each parameter and, per parameter, the
 * state its update rule needs (momentum buffer; Adam's two moments) and a
 * step count.  State tensors are charged to SQ_MEM_OPTIM and allocated
 * lazily, on the first step that updates that parameter, so a parameter that
 * stays frozen never costs optimizer memory.
 *
 * Semantics follow PyTorch's torch.optim.SGD and torch.optim.AdamW
 * (single-tensor, non-amsgrad, maximize=False):
 *   SGD:   d = g + wd*p;  b = d (first step) else b = mu*b + (1-damp)*d;
 *          d = nesterov ? d + mu*b : b   (when mu != 0);  p -= lr*d
 *   AdamW: p *= 1 - lr*wd;  m = m + (1-b1)*(g-m);  v = b2*v + (1-b2)*g*g;
 *          p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * A float32 parameter is updated in float32 arithmetic (as PyTorch does);
 * bias corrections are computed in double once per parameter per step.
 *
 * sq_optim_step skips a parameter whose requires_grad is 0 (frozen) or whose
 * grad is NULL: its value, its state and its step count stay as they were.
 * sq_optim_zero_grad releases the gradients (grad = NULL, like PyTorch's
 * zero_grad(set_to_none=True)): the memory goes back at once and the next
 * backward allocates a fresh gradient instead of adding into zeros. */
#ifndef SQ_OPTIM_H
#define SQ_OPTIM_H

#include "sq_tensor.h"

typedef enum { SQ_OPTIM_SGD = 0, SQ_OPTIM_ADAMW } sq_optim_kind;

typedef struct {
    double lr;            /* >= 0 */
    double momentum;      /* >= 0; 0 keeps no state */
    double dampening;     /* >= 0; must be 0 with nesterov */
    double weight_decay;  /* >= 0; L2 added to the gradient (coupled, as in SGD) */
    int nesterov;         /* needs momentum > 0 and dampening 0 */
} sq_sgd_cfg;

typedef struct {
    double lr;            /* >= 0 */
    double beta1, beta2;  /* in [0,1) */
    double eps;           /* >= 0 */
    double weight_decay;  /* >= 0; decoupled: p *= 1 - lr*wd */
} sq_adamw_cfg;

/* PyTorch's defaults: SGD(lr given, everything else 0);
 * AdamW(lr=1e-3, betas=(0.9,0.999), eps=1e-8, weight_decay=1e-2). */
sq_sgd_cfg sq_sgd_defaults(double lr);
sq_adamw_cfg sq_adamw_defaults(void);

typedef struct sq_optim {
    sq_optim_kind kind;
    int n;                 /* number of parameters */
    sq_tensor **params;    /* owned references */
    sq_tensor **state0;    /* SGD momentum buffer / Adam exp_avg; owned, NULL until first update */
    sq_tensor **state1;    /* Adam exp_avg_sq; owned, NULL until first update (NULL for SGD) */
    int64_t *steps;        /* per-parameter update count */
    int64_t calls;         /* sq_optim_step calls */
    sq_sgd_cfg sgd;
    sq_adamw_cfg adamw;
} sq_optim;

/* Creates an optimizer over params[0..n) (each retained; float32/float64,
 * contiguous, on the cpu or the gpu; no parameter listed twice).  *out: caller owns, free with
 * sq_optim_free.  Fails with SQ_ERR_ARG naming the bad setting or parameter. */
sq_status sq_optim_sgd_init(sq_ctx *ctx, int n, sq_tensor *const *params, const sq_sgd_cfg *cfg,
                            sq_optim **out);
sq_status sq_optim_adamw_init(sq_ctx *ctx, int n, sq_tensor *const *params,
                              const sq_adamw_cfg *cfg, sq_optim **out);
/* Releases the parameters and all state.  NULL-safe. */
void sq_optim_free(sq_optim *opt);

/* One update of every trainable parameter that has a gradient.  Every
 * gradient is checked (dtype, element count, contiguity) before any
 * parameter changes, so a failure leaves the optimizer and the parameters
 * as they were.  Allocating state can fail with SQ_ERR_NOMEM mid-way; the
 * parameters updated before it keep their update. */
sq_status sq_optim_step(sq_ctx *ctx, sq_optim *opt);
/* Releases every parameter's gradient (grad = NULL). */
void sq_optim_zero_grad(sq_optim *opt);

double sq_optim_get_lr(const sq_optim *opt);
/* lr must be finite and >= 0. */
sq_status sq_optim_set_lr(sq_ctx *ctx, sq_optim *opt, double lr);
/* Number of updates parameter i has received (0 for i out of range). */
int64_t sq_optim_param_steps(const sq_optim *opt, int i);
/* Bytes of optimizer state currently allocated (what SQ_MEM_OPTIM holds for it). */
int64_t sq_optim_state_bytes(const sq_optim *opt);

#endif
