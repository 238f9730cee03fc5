/*
 * RFC 6962 hashing in bulk, for the replay of a whole log (``sigstead fsck``).
 *
 * Why this exists: hashing one leaf with hashlib costs a Python call, a bytes concatenation and
 * a hash object besides the SHA-256 itself, and an interior node costs more in Python than in
 * SHA-256, so a replay in Python stays near 250k leaves/s on one core. Here a whole block of
 * leaves, and a whole 256-leaf subtree, is hashed in one call. The hashing is OpenSSL's libcrypto (the one the
 * system's Python links too); this file only loops.
 *
 * services/log/merkle.py is the API: it imports this module when it was built and otherwise
 * runs the same functions in Python, and tests/services/log/test_merkle.py holds both to the
 * same vectors. The GIL is held throughout: the inputs are borrowed from Python objects that
 * another thread could otherwise release under us.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* SHA256_Init/Update/Final are deprecated in OpenSSL 3 in favour of EVP, whose per-digest
 * provider dispatch costs more: measured here (OpenSSL 3.0), EVP_DigestInit_ex2/Update/Final on
 * a reused context took 217 ns for a 65-byte node against 187 ns, and 607 ns against 546 ns for
 * a 513-byte leaf. They remain in every OpenSSL 3 release; a build without them fails to
 * compile, and merkle.py then falls back to hashlib. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <string.h>

#define HASH 32

static const unsigned char LEAF_PREFIX = 0x00;
static const unsigned char NODE_PREFIX = 0x01;

static void
hash_node(const unsigned char *left, const unsigned char *right, unsigned char *out)
{
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, &NODE_PREFIX, 1);
    SHA256_Update(&ctx, left, HASH);
    SHA256_Update(&ctx, right, HASH);
    SHA256_Final(out, &ctx);
}

/* SHA-256(0x00 || leaf) into out; -1 with an exception set when leaf is not bytes-like. */
static int
hash_leaf(PyObject *leaf, unsigned char *out)
{
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, &LEAF_PREFIX, 1);
    if (PyBytes_CheckExact(leaf)) {
        /* The common case (rows from a database driver), without the buffer protocol. */
        SHA256_Update(&ctx, PyBytes_AS_STRING(leaf), (size_t)PyBytes_GET_SIZE(leaf));
    }
    else {
        Py_buffer view;
        if (PyObject_GetBuffer(leaf, &view, PyBUF_SIMPLE) < 0) {
            return -1;
        }
        SHA256_Update(&ctx, view.buf, (size_t)view.len);
        PyBuffer_Release(&view);
    }
    SHA256_Final(out, &ctx);
    return 0;
}

PyDoc_STRVAR(hash_leaves_doc,
"hash_leaves(leaves, /)\n--\n\n"
"The RFC 6962 leaf hashes SHA-256(0x00 || leaf) of a sequence of bytes-like objects,\n"
"concatenated: 32 bytes per leaf, in order.");

static PyObject *
hash_leaves(PyObject *Py_UNUSED(module), PyObject *leaves)
{
    PyObject *seq = PySequence_Fast(leaves, "hash_leaves() takes a sequence of bytes-like leaves");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *result = PyBytes_FromStringAndSize(NULL, n * HASH);
    if (result == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (hash_leaf(items[i], out + i * HASH) < 0) {
            Py_DECREF(result);
            Py_DECREF(seq);
            return NULL;
        }
    }
    Py_DECREF(seq);
    return result;
}

PyDoc_STRVAR(check_leaves_doc,
"check_leaves(rows, /)\n--\n\n"
"For rows whose column 0 is a stored leaf hash and column 1 the leaf: the leaf hashes of the\n"
"leaves, concatenated, and the position of the first row whose stored hash differs (-1 if\n"
"none).");

/* The replay's inner loop in one call: what hash_leaves does, plus the comparison with the
 * stored leaf hashes, without building the two lists of columns in Python first. */
static PyObject *
check_leaves(PyObject *Py_UNUSED(module), PyObject *rows)
{
    PyObject *seq = PySequence_Fast(rows, "check_leaves() takes a sequence of rows");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *computed = PyBytes_FromStringAndSize(NULL, n * HASH);
    if (computed == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(computed);
    Py_ssize_t first = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = items[i];
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < 2) {
            PyErr_SetString(PyExc_TypeError,
                            "check_leaves() rows are (leaf hash, leaf, ...) tuples");
            goto fail;
        }
        if (hash_leaf(PyTuple_GET_ITEM(row, 1), out + i * HASH) < 0) {
            goto fail;
        }
        if (first < 0) {
            Py_buffer view;
            if (PyObject_GetBuffer(PyTuple_GET_ITEM(row, 0), &view, PyBUF_SIMPLE) < 0) {
                goto fail;
            }
            if (view.len != HASH || memcmp(view.buf, out + i * HASH, HASH) != 0) {
                first = i;
            }
            PyBuffer_Release(&view);
        }
    }
    Py_DECREF(seq);
    return Py_BuildValue("(Nn)", computed, first);
fail:
    Py_DECREF(computed);
    Py_DECREF(seq);
    return NULL;
}

/* The level above ``parents`` pairs of hashes at ``below``, written to ``out``. ``out`` may be
 * ``below`` itself: parent i is written after pair i is read, over what pairs up to i held. */
static void
hash_pairs(const unsigned char *below, Py_ssize_t parents, unsigned char *out)
{
    for (Py_ssize_t i = 0; i < parents; i++) {
        hash_node(below + 2 * i * HASH, below + (2 * i + 1) * HASH, out + i * HASH);
    }
}

PyDoc_STRVAR(subtree_root_doc,
"subtree_root(hashes, /)\n--\n\n"
"The root of a perfect subtree from its 2**k bottom hashes, concatenated (32 bytes each).\n"
"Raises ValueError when the length is not 32 times a power of two.");

static PyObject *
subtree_root(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Py_ssize_t count = view.len / HASH;
    if (view.len % HASH != 0 || count == 0 || (count & (count - 1)) != 0) {
        PyErr_Format(PyExc_ValueError,
                     "subtree_root() needs 2**k hashes of 32 bytes, got %zd bytes", view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    if (count == 1) {
        PyObject *only = PyBytes_FromStringAndSize(view.buf, HASH);
        PyBuffer_Release(&view);
        return only;
    }
    /* The first level reads the caller's buffer and writes the scratch; the others halve the
     * scratch in place (hash_pairs allows it). */
    unsigned char *scratch = PyMem_Malloc((size_t)(count / 2) * HASH);
    if (scratch == NULL) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    const unsigned char *below = view.buf;
    for (Py_ssize_t width = count / 2; width >= 1; width /= 2) {
        hash_pairs(below, width, scratch);
        below = scratch;
    }
    PyBuffer_Release(&view);
    PyObject *result = PyBytes_FromStringAndSize((const char *)scratch, HASH);
    PyMem_Free(scratch);
    return result;
}

PyDoc_STRVAR(tile_levels_doc,
"tile_levels(hashes, /)\n--\n\n"
"The levels above a row of hashes (32 bytes each), bottom-up and concatenated: each level\n"
"hashes the pairs of the one below (an odd last hash has no parent), up to a level of one\n"
"hash; empty for fewer than two. Raises ValueError when the length is not a multiple of 32.");

static PyObject *
tile_levels(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len % HASH != 0) {
        PyErr_Format(PyExc_ValueError,
                     "tile_levels() needs hashes of 32 bytes, got %zd bytes", view.len);
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t width = view.len / HASH; width > 1; width /= 2) {
        total += width / 2;
    }
    PyObject *result = PyBytes_FromStringAndSize(NULL, total * HASH);
    if (result == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    /* Each level is written right after the one it reads, inside the result, so the levels
     * end up in the order ExpandedTile indexes them. */
    const unsigned char *below = view.buf;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t width = view.len / HASH; width > 1; width /= 2) {
        hash_pairs(below, width / 2, out);
        below = out;
        out += width / 2 * HASH;
    }
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"hash_leaves", hash_leaves, METH_O, hash_leaves_doc},
    {"check_leaves", check_leaves, METH_O, check_leaves_doc},
    {"subtree_root", subtree_root, METH_O, subtree_root_doc},
    {"tile_levels", tile_levels, METH_O, tile_levels_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "services.log._merkle",
    .m_doc = "RFC 6962 hashing in bulk over OpenSSL's libcrypto (see merkle.py).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__merkle(void)
{
    return PyModule_Create(&module);
}
