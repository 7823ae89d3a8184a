/* json.h - a small strict JSON (RFC 8259) parser into a tree, for safetensors
 * headers and manifests, plus a string writer.
 *
 * Strict: no comments, trailing commas, leading zeros, NaN/Infinity, control
 * characters in strings or invalid UTF-8; \u escapes are decoded (surrogate
 * pairs combined, lone surrogates rejected); nesting is limited to 64 levels.
 * Every read is bounds-checked against the given length (the text need not be
 * NUL-terminated). Errors name `name` and the byte offset. */
#ifndef KM_JSON_H
#define KM_JSON_H

#include "../core/km.h"

typedef enum { KM_JSON_NULL, KM_JSON_BOOL, KM_JSON_NUM, KM_JSON_STR, KM_JSON_ARR, KM_JSON_OBJ } km_json_type;

typedef struct km_json km_json;
struct km_json {
    km_json_type type;
    int b;          /* BOOL */
    double num;     /* NUM (also set for integers) */
    int is_int;     /* NUM written without fraction/exponent and within int64 */
    int64_t i;      /* NUM when is_int */
    char *str;      /* STR: decoded UTF-8, NUL-terminated (may hold \u0000: compare len) */
    size_t len;     /* STR: bytes in str */
    int n;          /* ARR / OBJ: number of members */
    km_json *items; /* ARR elements / OBJ values, n of them */
    km_json *keys;  /* OBJ keys (STR nodes), n of them, in document order */
    size_t offset;  /* where the value starts in the text */
};

km_status km_json_parse(const char *name, const char *text, size_t n, km_json *out);
void km_json_free(km_json *j);
/* Member `key` of an object (first match), or NULL. */
const km_json *km_json_get(const km_json *obj, const char *key);
const char *km_json_type_name(km_json_type t);
/* Reads (at most 16 MiB) and parses the JSON file `path`; a read failure's
 * message gets `read_prefix` (printf-style, with `arg`) in front. */
km_status km_json_load(const char *path, const char *read_prefix, const char *arg, km_json *out);
/* Typed members of a settings object, for config files: missing ->
 * KM_EMISSING "FILE: missing setting 'KEY'", wrong type -> KM_EFORMAT
 * "FILE: 'KEY' must be a number / an integer / a string [or null]". An
 * integer must fit an int; a null string (when nullable) leaves *out alone. */
km_status km_json_setting_num(const km_json *obj, const char *file, const char *key, double *out);
km_status km_json_setting_int(const km_json *obj, const char *file, const char *key, int *out);
km_status km_json_setting_str(const km_json *obj, const char *file, const char *key, int nullable, char **out);
/* Writes s as a JSON string literal (quotes, escapes for " \ and controls). */
void km_json_fput_str(FILE *f, const char *s);
/* One member line of a flat object written by hand (summary.json files):
 * `  "key": v,` with v as %.9g, null when not finite (no comma when last);
 * `  "key": "v",` (null for NULL). */
void km_json_fput_num_member(FILE *f, const char *key, double v, int last);
void km_json_fput_str_member(FILE *f, const char *key, const char *v);

#endif
