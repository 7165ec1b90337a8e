/* model_meta.c — what a loaded model's file says beyond its weights: the
 * GGUF itself, and the expert mask a zero-mode prune recorded. */
#include "engine/engine.h"

const mp_gguf *mp_model_gguf(const mp_model *m) {
    return m->am->gguf;
}
