/* pickle.c - restricted pickle VM for torch state dicts (see pickle.h).
 *
 * Follows CPython's Lib/pickle.py _Unpickler semantics for the supported
 * opcodes, with MARK kept as a stack of positions (pickle.py's metastack):
 * nothing may be popped below the innermost mark, as in CPython. */
#include "pickle.h"

#include <string.h>

/* ---- arena ------------------------------------------------------------ */

struct km_pk_block {
    km_pk_block *next;
    size_t used, size;
    _Alignas(16) unsigned char mem[];
};

/* Hard cap on what one load may allocate for objects: a real state-dict
 * pickle needs a few hundred bytes per tensor. */
#define ARENA_MAX ((size_t)1 << 30)
#define ARENA_BLOCK ((size_t)1 << 16)

static void *arena_alloc(km_pk_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    km_pk_block *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t sz = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        if (a->total + sz > ARENA_MAX) return NULL;
        b = km_try_malloc(sizeof *b + sz);
        if (!b) return NULL;
        b->size = sz;
        b->used = 0;
        a->total += sz;
        /* A large one-off block goes behind the current one so that the
         * current block's free space stays usable. */
        if (a->head && sz > ARENA_BLOCK) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = b->mem + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

void km_pk_arena_free(km_pk_arena *a) {
    km_pk_block *b = a->head;
    while (b) {
        km_pk_block *nx = b->next;
        km_free(b);
        b = nx;
    }
    a->head = NULL;
    a->total = 0;
}

const char *km_pk_type_name(km_pk_type t) {
    static const char *n[] = {"None", "bool",  "int",  "int", "float",   "str",
                              "tuple", "list", "dict", "global", "storage", "tensor"};
    return (unsigned)t < sizeof n / sizeof n[0] ? n[t] : "?";
}

/* ---- VM state ------------------------------------------------------------ */

typedef struct {
    const char *name;
    const uint8_t *buf;
    size_t n, pos, op_pos;
    km_pk_arena *a;
    km_pk **stack;
    size_t sp, scap;
    size_t *marks;
    size_t nmarks, mcap;
    km_pk **memo;
    size_t memo_cap, memo_len; /* memo_len: distinct indices set (MEMOIZE uses it) */
} vm;

static km_status vm_err(vm *v, const char *what) {
    return km_err(KM_EFORMAT, "%s: pickle opcode 0x%02x at offset %zu: %s", v->name,
                  v->op_pos < v->n ? v->buf[v->op_pos] : 0, v->op_pos, what);
}

static km_status oom(vm *v) {
    return km_err(KM_ENOMEM, "%s: pickle at offset %zu needs more memory than allowed", v->name,
                  v->op_pos);
}

static km_pk *new_obj(vm *v, km_pk_type t) {
    km_pk *o = arena_alloc(v->a, sizeof *o);
    if (o) o->type = t;
    return o;
}

static km_status push(vm *v, km_pk *o) {
    if (!o) return oom(v);
    if (v->sp == v->scap) {
        /* Each push consumes at least one input byte, so the stack is bounded
         * by the pickle's length. */
        size_t cap = v->scap ? v->scap * 2 : 64;
        km_pk **s = km_try_malloc(sizeof *s * cap);
        if (!s) return oom(v);
        if (v->sp) memcpy(s, v->stack, sizeof *s * v->sp);
        km_free(v->stack);
        v->stack = s;
        v->scap = cap;
    }
    v->stack[v->sp++] = o;
    return KM_OK;
}

static size_t mark_base(const vm *v) { return v->nmarks ? v->marks[v->nmarks - 1] : 0; }

static km_status pop(vm *v, km_pk **o) {
    if (v->sp <= mark_base(v)) return vm_err(v, "stack underflow");
    *o = v->stack[--v->sp];
    return KM_OK;
}

static km_status top(vm *v, km_pk **o) {
    if (v->sp <= mark_base(v)) return vm_err(v, "stack underflow");
    *o = v->stack[v->sp - 1];
    return KM_OK;
}

/* Pops the innermost mark: items are stack[*start .. sp). */
static km_status pop_mark(vm *v, size_t *start) {
    if (!v->nmarks) return vm_err(v, "no MARK on the stack");
    *start = v->marks[--v->nmarks];
    return KM_OK;
}

/* The object just below a popped mark (the target of APPENDS / SETITEMS). */
static km_status below_mark(vm *v, size_t start, km_pk **o) {
    if (start <= mark_base(v)) return vm_err(v, "stack underflow");
    *o = v->stack[start - 1];
    return KM_OK;
}

static km_status need(vm *v, size_t k) {
    if (v->n - v->pos < k) return vm_err(v, "argument runs past the end of the pickle (truncated)");
    return KM_OK;
}

static uint32_t rd32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64le(const uint8_t *p) { return rd32le(p) | (uint64_t)rd32le(p + 4) << 32; }

/* Appends one item to a tuple/list/dict's item array (arena, doubling). */
static km_status add_item(vm *v, km_pk *c, km_pk *it) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        km_pk **a = arena_alloc(v->a, sizeof *a * cap);
        if (!a) return oom(v);
        if (c->n) memcpy(a, c->items, sizeof *a * c->n);
        c->items = a;
        c->cap = cap;
    }
    c->items[c->n++] = it;
    return KM_OK;
}

static km_status make_seq(vm *v, km_pk_type t, size_t start, km_pk **out) {
    km_pk *o = new_obj(v, t);
    if (!o) return oom(v);
    size_t k = v->sp - start;
    if (k) {
        o->items = arena_alloc(v->a, sizeof *o->items * k);
        if (!o->items) return oom(v);
        memcpy(o->items, v->stack + start, sizeof *o->items * k);
    }
    o->n = o->cap = k;
    v->sp = start;
    *out = o;
    return KM_OK;
}

static km_status new_str(vm *v, const uint8_t *p, size_t len, km_pk_type t, km_pk **out) {
    km_pk *o = new_obj(v, t);
    if (!o) return oom(v);
    o->s = arena_alloc(v->a, len + 1);
    if (!o->s) return oom(v);
    memcpy(o->s, p, len);
    o->s[len] = 0;
    o->n = len;
    *out = o;
    return KM_OK;
}

static km_status op_string(vm *v, size_t lenbytes, int is_signed) {
    km_status s = need(v, lenbytes);
    if (s) return s;
    const uint8_t *p = v->buf + v->pos;
    uint64_t len = lenbytes == 1 ? p[0] : lenbytes == 4 ? rd32le(p) : rd64le(p);
    if (is_signed && lenbytes == 4 && (len & 0x80000000u)) return vm_err(v, "negative string length");
    v->pos += lenbytes;
    if (len > v->n - v->pos) return vm_err(v, "string runs past the end of the pickle (truncated)");
    km_pk *o;
    s = new_str(v, v->buf + v->pos, (size_t)len, KM_PK_STR, &o);
    if (s) return s;
    v->pos += (size_t)len;
    return push(v, o);
}

/* LONG1 / LONG4: little-endian two's complement of `len` bytes. */
static km_status op_long(vm *v, size_t len) {
    km_pk *o;
    if (len > 8) {
        /* Wider than 64 bits: still an int64 if the extra bytes are pure sign
         * extension; otherwise kept as raw bytes (only the legacy magic number,
         * 0x1950a86a20f9469cfc6c, is that wide). */
        const uint8_t *p = v->buf + v->pos;
        uint8_t ext = p[7] & 0x80 ? 0xff : 0;
        int fits = 1;
        for (size_t i = 8; i < len; i++) fits &= p[i] == ext;
        if (!fits) {
            km_status s = new_str(v, p, len, KM_PK_BIGINT, &o);
            if (s) return s;
            v->pos += len;
            return push(v, o);
        }
    }
    uint64_t u = 0;
    size_t k = len < 8 ? len : 8;
    for (size_t i = 0; i < k; i++) u |= (uint64_t)v->buf[v->pos + i] << (8 * i);
    if (k && k < 8 && (v->buf[v->pos + k - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * k);
    v->pos += len;
    o = new_obj(v, KM_PK_INT);
    if (!o) return oom(v);
    o->i = (int64_t)u;
    return push(v, o);
}

/* ---- globals -------------------------------------------------------------- */

static const struct {
    const char *module, *name;
    km_pk_global id;
    km_dtype dtype;
} g_allowed[] = {
    {"collections", "OrderedDict", KM_G_ORDEREDDICT, KM_F32},
    {"torch._utils", "_rebuild_tensor_v2", KM_G_REBUILD_TENSOR_V2, KM_F32},
    {"torch._utils", "_rebuild_tensor", KM_G_REBUILD_TENSOR, KM_F32},
    {"torch._utils", "_rebuild_parameter", KM_G_REBUILD_PARAMETER, KM_F32},
    {"torch._utils", "_rebuild_parameter_with_state", KM_G_REBUILD_PARAMETER_WITH_STATE, KM_F32},
    {"torch", "FloatStorage", KM_G_STORAGE, KM_F32},
    {"torch", "HalfStorage", KM_G_STORAGE, KM_F16},
    {"torch", "BFloat16Storage", KM_G_STORAGE, KM_BF16},
    {"torch", "DoubleStorage", KM_G_STORAGE, KM_F64},
    {"torch", "LongStorage", KM_G_STORAGE, KM_I64},
    {"torch", "IntStorage", KM_G_STORAGE, KM_I32},
    {"torch", "ShortStorage", KM_G_STORAGE, KM_I16},
    {"torch", "CharStorage", KM_G_STORAGE, KM_I8},
    {"torch", "ByteStorage", KM_G_STORAGE, KM_U8},
    {"torch", "BoolStorage", KM_G_STORAGE, KM_BOOL},
};

/* Copies at most 80 bytes of s into buf, replacing non-printable bytes. */
static const char *printable(char *buf, size_t cap, const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n && k + 4 < cap && i < 80; i++)
        buf[k++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (n > 80 && k + 4 < cap) { memcpy(buf + k, "...", 3); k += 3; }
    buf[k] = 0;
    return buf;
}

static km_status push_global(vm *v, const char *mod, size_t mlen, const char *nm, size_t nlen) {
    for (size_t i = 0; i < sizeof g_allowed / sizeof g_allowed[0]; i++) {
        if (strlen(g_allowed[i].module) != mlen || memcmp(g_allowed[i].module, mod, mlen)) continue;
        if (strlen(g_allowed[i].name) != nlen || memcmp(g_allowed[i].name, nm, nlen)) continue;
        km_pk *o = new_obj(v, KM_PK_GLOBAL);
        if (!o) return oom(v);
        o->i = g_allowed[i].id;
        o->dtype = g_allowed[i].dtype;
        return push(v, o);
    }
    char a[96], b[96];
    return km_err(KM_EFORMAT, "%s: refusing to load: pickle references '%s.%s' at offset %zu (only "
                              "tensors, storages and plain containers are allowed; nothing is "
                              "executed)", v->name, printable(a, sizeof a, mod, mlen),
                  printable(b, sizeof b, nm, nlen), v->op_pos);
}

/* ---- torch callables ------------------------------------------------------- */

static int get_int(const km_pk *o, int64_t *x) {
    if (o->type == KM_PK_INT || o->type == KM_PK_BOOL) {
        *x = o->i;
        return 1;
    }
    return 0;
}

/* BINPERSID ('storage', torch.<T>Storage, key, location, numel[, view_metadata]). */
static km_status persistent_load(vm *v, km_pk *pid, km_pk **out) {
    if (pid->type != KM_PK_TUPLE || pid->n < 5 || pid->n > 6)
        return vm_err(v, "persistent id is not a ('storage', type, key, location, numel) tuple");
    km_pk **it = pid->items;
    if (it[0]->type != KM_PK_STR || strcmp(it[0]->s, "storage"))
        return vm_err(v, "persistent id does not start with 'storage'");
    if (it[1]->type != KM_PK_GLOBAL || it[1]->i != KM_G_STORAGE)
        return vm_err(v, "persistent id's storage type is not a torch.<T>Storage class");
    if (it[2]->type != KM_PK_STR || it[2]->n == 0 || strlen(it[2]->s) != it[2]->n)
        return vm_err(v, "persistent id's storage key is not a non-empty string");
    int64_t numel;
    if (!get_int(it[4], &numel) || numel < 0)
        return vm_err(v, "persistent id's storage size is not a non-negative integer");
    km_pk *o = new_obj(v, KM_PK_STORAGE);
    km_pk_storage *st = arena_alloc(v->a, sizeof *st);
    if (!o || !st) return oom(v);
    st->dtype = it[1]->dtype;
    st->key = it[2]->s;
    st->numel = numel;
    st->view_offset = 0;
    st->view_numel = numel;
    if (pid->n == 6 && it[5]->type != KM_PK_NONE) {
        /* Legacy (torch < 0.4) storage view: (view_key, offset, size) into the root. */
        km_pk *vm_ = it[5];
        int64_t off, sz;
        if (vm_->type != KM_PK_TUPLE || vm_->n != 3 || !get_int(vm_->items[1], &off) ||
            !get_int(vm_->items[2], &sz))
            return vm_err(v, "storage view metadata is not a (key, offset, size) tuple");
        if (off < 0 || sz < 0 || off > numel || sz > numel - off)
            return vm_err(v, "storage view lies outside its root storage");
        st->view_offset = off;
        st->view_numel = sz;
    }
    o->st = st;
    *out = o;
    return KM_OK;
}

static km_status rebuild_tensor(vm *v, km_pk *args, km_pk **out) {
    if (args->n < 4) return vm_err(v, "_rebuild_tensor needs (storage, offset, size, stride)");
    km_pk **it = args->items;
    if (it[0]->type != KM_PK_STORAGE) return vm_err(v, "_rebuild_tensor: first argument is not a storage");
    int64_t off;
    if (!get_int(it[1], &off) || off < 0)
        return vm_err(v, "_rebuild_tensor: storage offset is not a non-negative integer");
    if (it[2]->type != KM_PK_TUPLE || it[3]->type != KM_PK_TUPLE)
        return vm_err(v, "_rebuild_tensor: size and stride must be tuples");
    if (it[2]->n != it[3]->n) return vm_err(v, "_rebuild_tensor: size and stride lengths differ");
    if (it[2]->n > KM_MAXDIM) return vm_err(v, "_rebuild_tensor: more than 8 dimensions");
    km_pk *o = new_obj(v, KM_PK_TENSOR);
    km_pk_tensor *t = arena_alloc(v->a, sizeof *t);
    if (!o || !t) return oom(v);
    t->storage = it[0];
    t->offset = off;
    t->ndim = (int)it[2]->n;
    for (int d = 0; d < t->ndim; d++) {
        if (!get_int(it[2]->items[d], &t->shape[d]) || !get_int(it[3]->items[d], &t->stride[d]) ||
            t->shape[d] < 0 || t->stride[d] < 0)
            return vm_err(v, "_rebuild_tensor: sizes and strides must be non-negative integers");
    }
    o->t = t;
    *out = o;
    return KM_OK;
}

static km_status op_reduce(vm *v) {
    km_pk *args = NULL, *fn = NULL, *o = NULL;
    km_status s = pop(v, &args);
    if (!s) s = pop(v, &fn);
    if (s) return s;
    if (fn->type != KM_PK_GLOBAL) return vm_err(v, "REDUCE of something that is not a known global");
    if (args->type != KM_PK_TUPLE) return vm_err(v, "REDUCE arguments are not a tuple");
    switch ((km_pk_global)fn->i) {
    case KM_G_ORDEREDDICT:
        if (args->n) return vm_err(v, "OrderedDict(...) with arguments is not supported");
        o = new_obj(v, KM_PK_DICT);
        if (!o) return oom(v);
        break;
    case KM_G_REBUILD_TENSOR_V2:
    case KM_G_REBUILD_TENSOR:
        s = rebuild_tensor(v, args, &o);
        if (s) return s;
        break;
    case KM_G_REBUILD_PARAMETER:
    case KM_G_REBUILD_PARAMETER_WITH_STATE:
        if (args->n < 1 || args->items[0]->type != KM_PK_TENSOR)
            return vm_err(v, "_rebuild_parameter: first argument is not a tensor");
        o = args->items[0];
        break;
    case KM_G_STORAGE:
        return vm_err(v, "calling a torch storage class is not supported");
    }
    return push(v, o);
}

/* ---- main loop ------------------------------------------------------------- */

static km_status memo_put(vm *v, uint64_t idx) {
    km_pk *o;
    km_status s = top(v, &o);
    if (s) return s;
    /* CPython numbers memo entries 0, 1, 2, ... so an index can never exceed
     * the number of PUTs, which is less than the pickle's length. */
    if (idx >= v->n) return vm_err(v, "memo index out of range");
    if (idx >= v->memo_cap) {
        size_t cap = v->memo_cap ? v->memo_cap : 64;
        while (cap <= idx) cap *= 2;
        km_pk **m = km_try_malloc(sizeof *m * cap);
        if (!m) return oom(v);
        memset(m, 0, sizeof *m * cap);
        if (v->memo_cap) memcpy(m, v->memo, sizeof *m * v->memo_cap);
        km_free(v->memo);
        v->memo = m;
        v->memo_cap = cap;
    }
    if (!v->memo[idx]) v->memo_len++;
    v->memo[idx] = o;
    return KM_OK;
}

static km_status memo_get(vm *v, uint64_t idx) {
    if (idx >= v->memo_cap || !v->memo[idx]) return vm_err(v, "memo GET of an index never PUT");
    return push(v, v->memo[idx]);
}

static km_status run(vm *v, km_pk **out) {
    km_status s = KM_OK;
    for (;;) {
        if (v->pos >= v->n) {
            v->op_pos = v->pos;
            return km_err(KM_EFORMAT, "%s: pickle ends at offset %zu without STOP (truncated)",
                          v->name, v->pos);
        }
        v->op_pos = v->pos;
        uint8_t op = v->buf[v->pos++];
        km_pk *o = NULL, *a = NULL, *b = NULL;
        size_t start = 0;
        switch (op) {
        case 0x80: /* PROTO */
            if ((s = need(v, 1))) return s;
            if (v->buf[v->pos] > 5) return vm_err(v, "unsupported pickle protocol (> 5)");
            v->pos++;
            break;
        case 0x95: /* FRAME: framing is only a buffering hint */
            if ((s = need(v, 8))) return s;
            v->pos += 8;
            break;
        case '.': /* STOP */
            if ((s = pop(v, &o))) return s;
            *out = o;
            return KM_OK;
        case '(': /* MARK */
            if (v->nmarks == v->mcap) {
                size_t cap = v->mcap ? v->mcap * 2 : 32;
                size_t *m = km_try_malloc(sizeof *m * cap);
                if (!m) return oom(v);
                if (v->nmarks) memcpy(m, v->marks, sizeof *m * v->nmarks);
                km_free(v->marks);
                v->marks = m;
                v->mcap = cap;
            }
            v->marks[v->nmarks++] = v->sp;
            break;
        case '1': /* POP_MARK */
            if ((s = pop_mark(v, &start))) return s;
            v->sp = start;
            break;
        case '0': /* POP */
            if ((s = pop(v, &o))) return s;
            break;
        case '2': /* DUP */
            if ((s = top(v, &o))) return s;
            if ((s = push(v, o))) return s;
            break;
        case '}': if ((s = push(v, new_obj(v, KM_PK_DICT)))) return s; break;
        case ']': if ((s = push(v, new_obj(v, KM_PK_LIST)))) return s; break;
        case ')': if ((s = push(v, new_obj(v, KM_PK_TUPLE)))) return s; break;
        case 'N': if ((s = push(v, new_obj(v, KM_PK_NONE)))) return s; break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            if (!(o = new_obj(v, KM_PK_BOOL))) return oom(v);
            o->i = op == 0x88;
            if ((s = push(v, o))) return s;
            break;
        case 'J': /* BININT */
        case 'K': /* BININT1 */
        case 'M': /* BININT2 */ {
            size_t k = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            if ((s = need(v, k))) return s;
            const uint8_t *p = v->buf + v->pos;
            if (!(o = new_obj(v, KM_PK_INT))) return oom(v);
            o->i = op == 'J' ? (int64_t)(int32_t)rd32le(p) : op == 'K' ? p[0] : (p[0] | p[1] << 8);
            v->pos += k;
            if ((s = push(v, o))) return s;
            break;
        }
        case 0x8a: /* LONG1 */
            if ((s = need(v, 1))) return s;
            start = v->buf[v->pos++];
            if ((s = need(v, start))) return s;
            if ((s = op_long(v, start))) return s;
            break;
        case 0x8b: /* LONG4 */ {
            if ((s = need(v, 4))) return s;
            uint32_t len = rd32le(v->buf + v->pos);
            v->pos += 4;
            if (len & 0x80000000u) return vm_err(v, "negative LONG4 length");
            if ((s = need(v, len))) return s;
            if ((s = op_long(v, len))) return s;
            break;
        }
        case 'G': { /* BINFLOAT: big-endian IEEE double */
            if ((s = need(v, 8))) return s;
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = u << 8 | v->buf[v->pos + i];
            v->pos += 8;
            if (!(o = new_obj(v, KM_PK_FLOAT))) return oom(v);
            memcpy(&o->f, &u, 8);
            if ((s = push(v, o))) return s;
            break;
        }
        case 0x8c: /* SHORT_BINUNICODE */
        case 'U':  /* SHORT_BINSTRING */
        case 'C':  /* SHORT_BINBYTES */
            if ((s = op_string(v, 1, 0))) return s;
            break;
        case 'X': /* BINUNICODE */
        case 'B': /* BINBYTES */
            if ((s = op_string(v, 4, 0))) return s;
            break;
        case 'T': /* BINSTRING: signed 4-byte length */
            if ((s = op_string(v, 4, 1))) return s;
            break;
        case 0x8d: /* BINUNICODE8 */
        case 0x8e: /* BINBYTES8 */
            if ((s = op_string(v, 8, 0))) return s;
            break;
        case 'c': { /* GLOBAL "module\nname\n" */
            const uint8_t *p = v->buf + v->pos, *end = v->buf + v->n;
            const uint8_t *nl1 = memchr(p, '\n', (size_t)(end - p));
            const uint8_t *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1)) : NULL;
            if (!nl2) return vm_err(v, "GLOBAL without two newline-terminated names (truncated)");
            v->pos = (size_t)(nl2 + 1 - v->buf);
            if ((s = push_global(v, (const char *)p, (size_t)(nl1 - p), (const char *)nl1 + 1,
                                 (size_t)(nl2 - nl1 - 1))))
                return s;
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if ((s = pop(v, &b)) || (s = pop(v, &a))) return s;
            if (a->type != KM_PK_STR || b->type != KM_PK_STR)
                return vm_err(v, "STACK_GLOBAL of something that is not two strings");
            if ((s = push_global(v, a->s, a->n, b->s, b->n))) return s;
            break;
        case 'q': /* BINPUT */
            if ((s = need(v, 1))) return s;
            if ((s = memo_put(v, v->buf[v->pos++]))) return s;
            break;
        case 'r': /* LONG_BINPUT */
            if ((s = need(v, 4))) return s;
            v->pos += 4;
            if ((s = memo_put(v, rd32le(v->buf + v->pos - 4)))) return s;
            break;
        case 0x94: /* MEMOIZE */
            if ((s = memo_put(v, v->memo_len))) return s;
            break;
        case 'h': /* BINGET */
            if ((s = need(v, 1))) return s;
            if ((s = memo_get(v, v->buf[v->pos++]))) return s;
            break;
        case 'j': /* LONG_BINGET */
            if ((s = need(v, 4))) return s;
            v->pos += 4;
            if ((s = memo_get(v, rd32le(v->buf + v->pos - 4)))) return s;
            break;
        case 't': /* TUPLE */
        case 'l': /* LIST */
            if ((s = pop_mark(v, &start))) return s;
            if ((s = make_seq(v, op == 't' ? KM_PK_TUPLE : KM_PK_LIST, start, &o))) return s;
            if ((s = push(v, o))) return s;
            break;
        case 'd': /* DICT */
            if ((s = pop_mark(v, &start))) return s;
            if ((v->sp - start) % 2) return vm_err(v, "DICT with an odd number of items");
            if ((s = make_seq(v, KM_PK_DICT, start, &o))) return s;
            if ((s = push(v, o))) return s;
            break;
        case 0x85: /* TUPLE1..3 */
        case 0x86:
        case 0x87: {
            size_t k = (size_t)(op - 0x84);
            if (v->sp < mark_base(v) + k) return vm_err(v, "stack underflow");
            if ((s = make_seq(v, KM_PK_TUPLE, v->sp - k, &o))) return s;
            if ((s = push(v, o))) return s;
            break;
        }
        case 'a': /* APPEND */
            if ((s = pop(v, &b)) || (s = top(v, &a))) return s;
            if (a->type != KM_PK_LIST) return vm_err(v, "APPEND to something that is not a list");
            if ((s = add_item(v, a, b))) return s;
            break;
        case 'e': /* APPENDS */
            if ((s = pop_mark(v, &start))) return s;
            if ((s = below_mark(v, start, &a))) return s;
            if (a->type != KM_PK_LIST) return vm_err(v, "APPENDS to something that is not a list");
            for (size_t i = start; i < v->sp; i++)
                if ((s = add_item(v, a, v->stack[i]))) return s;
            v->sp = start;
            break;
        case 's': /* SETITEM */
            if ((s = pop(v, &b)) || (s = pop(v, &o)) || (s = top(v, &a))) return s;
            if (a->type != KM_PK_DICT) return vm_err(v, "SETITEM on something that is not a dict");
            if ((s = add_item(v, a, o)) || (s = add_item(v, a, b))) return s;
            break;
        case 'u': /* SETITEMS */
            if ((s = pop_mark(v, &start))) return s;
            if ((s = below_mark(v, start, &a))) return s;
            if (a->type != KM_PK_DICT) return vm_err(v, "SETITEMS on something that is not a dict");
            if ((v->sp - start) % 2) return vm_err(v, "SETITEMS with an odd number of items");
            for (size_t i = start; i < v->sp; i++)
                if ((s = add_item(v, a, v->stack[i]))) return s;
            v->sp = start;
            break;
        case 'R': /* REDUCE */
            if ((s = op_reduce(v))) return s;
            break;
        case 'b': /* BUILD: the state (OrderedDict's _metadata) carries no tensors */
            if ((s = pop(v, &b)) || (s = top(v, &a))) return s;
            if (a->type != KM_PK_DICT && a->type != KM_PK_TENSOR)
                return vm_err(v, "BUILD on something that is not a dict or tensor");
            break;
        case 'Q': /* BINPERSID */
            if ((s = pop(v, &a))) return s;
            if ((s = persistent_load(v, a, &o))) return s;
            if ((s = push(v, o))) return s;
            break;
        default: {
            char what[96];
            snprintf(what, sizeof what, "unsupported opcode%s%c%s",
                     op >= 0x20 && op < 0x7f ? " '" : "", op >= 0x20 && op < 0x7f ? op : ' ',
                     op >= 0x20 && op < 0x7f ? "'" : "");
            return vm_err(v, what);
        }
        }
    }
}

km_status km_pickle_load(const char *name, const uint8_t *buf, size_t n, km_pk_arena *a,
                         km_pk **out, size_t *consumed) {
    vm v;
    memset(&v, 0, sizeof v);
    v.name = name;
    v.buf = buf;
    v.n = n;
    v.a = a;
    *out = NULL;
    km_status s = run(&v, out);
    if (!s && consumed) *consumed = v.pos;
    km_free(v.stack);
    km_free(v.marks);
    km_free(v.memo);
    return s;
}
