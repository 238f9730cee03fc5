/*
 * The leaf replay of ``sigstead fsck`` on SQLite, stepped in C.
 *
 * Why this exists: through Python's sqlite3 module every row becomes a tuple and two bytes
 * objects, ~0.25 us a row on top of SQLite's own ~0.35 us and SHA-256's ~0.3 us for a 512-byte
 * leaf, which holds a replay on one core below a million leaves a second. Here SQLite's and
 * OpenSSL's C APIs meet directly; the loop is all this file adds.
 *
 * services/audit/fsck.py uses it when it was built and the log is in SQLite, and otherwise reads
 * the same rows through the sqlite3 module and hashes them with merkle.check_leaves; the fsck
 * tests run both ways.
 *
 * The reader is its own read-only connection with its own read transaction, opened after fsck's
 * and closed after fsck's has ended: a second SQLite library in the process (a Python with its
 * own copy statically linked) would drop the other copy's POSIX locks on the file when it closes
 * its descriptors, so none is closed while fsck's snapshot is in use. Its snapshot can be newer
 * than fsck's, which is harmless: an entry below the head fsck read never changes in an honest
 * log, and a change in between is reported as a divergence, as it should be.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sqlite3.h>
#include <string.h>

/* See services/log/_merkle.c: the one-shot functions cost less per digest than EVP's. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#define HASH 32

static const char LEAVES_SQL[] =
    "SELECT leaf_hash, leaf FROM entries WHERE tree_id = ?1 AND idx >= ?2 AND idx < ?3"
    " ORDER BY idx";

typedef struct {
    PyObject_HEAD
    sqlite3 *db;
    sqlite3_stmt *stmt;
    int busy; /* a block is being read with the GIL released: refuse a second caller */
} Reader;

static PyObject *
sqlite_error(sqlite3 *db, const char *doing)
{
    PyErr_Format(PyExc_OSError, "SQLite, %s: %s", doing, db ? sqlite3_errmsg(db) : "out of memory");
    return NULL;
}

static void
reader_close_handles(Reader *self)
{
    if (self->stmt != NULL) {
        sqlite3_finalize(self->stmt);
        self->stmt = NULL;
    }
    if (self->db != NULL) {
        /* Read-only: ending the transaction can only release the snapshot. */
        sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close_v2(self->db);
        self->db = NULL;
    }
}

static int
reader_init(Reader *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"path", NULL};
    PyObject *path = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&:LeafReader", kwlist, PyUnicode_FSConverter,
                                     &path)) {
        return -1;
    }
    reader_close_handles(self);
    int rc = sqlite3_open_v2(PyBytes_AS_STRING(path), &self->db, SQLITE_OPEN_READONLY, NULL);
    Py_DECREF(path);
    if (rc != SQLITE_OK) {
        sqlite_error(self->db, "opening the database");
        reader_close_handles(self);
        return -1;
    }
    /* As fsck.py reads it: through a memory map, and waiting out a writer's brief locks. */
    sqlite3_busy_timeout(self->db, 30000);
    if (sqlite3_exec(self->db, "PRAGMA mmap_size = 1073741824; BEGIN", NULL, NULL, NULL)
            != SQLITE_OK
        || sqlite3_prepare_v2(self->db, LEAVES_SQL, -1, &self->stmt, NULL) != SQLITE_OK) {
        sqlite_error(self->db, "preparing the replay");
        reader_close_handles(self);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(check_doc,
"check(tree_id, start, end, /)\n--\n\n"
"Read the entries [start, end) of a tree in index order, hash each leaf, and compare with its\n"
"stored leaf hash. Returns (rows read, the leaf hashes concatenated, the position of the first\n"
"row whose stored hash differs or -1). Fewer rows than end - start means entries are missing.");

static PyObject *
reader_check(Reader *self, PyObject *args)
{
    long long tree_id, start, end;
    if (!PyArg_ParseTuple(args, "LLL:check", &tree_id, &start, &end)) {
        return NULL;
    }
    if (self->db == NULL) {
        PyErr_SetString(PyExc_ValueError, "the reader is closed");
        return NULL;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the reader is in use by another thread");
        return NULL;
    }
    if (end < start) {
        end = start;
    }
    Py_ssize_t want = (Py_ssize_t)(end - start);
    PyObject *computed = PyBytes_FromStringAndSize(NULL, want * HASH);
    if (computed == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(computed);
    sqlite3_stmt *stmt = self->stmt;
    Py_ssize_t count = 0, first = -1;
    int rc;

    self->busy = 1;
    /* Everything below is the reader's own (the statement, the output buffer): no Python object
     * is touched until the GIL is back. */
    Py_BEGIN_ALLOW_THREADS
    sqlite3_bind_int64(stmt, 1, tree_id);
    sqlite3_bind_int64(stmt, 2, start);
    sqlite3_bind_int64(stmt, 3, end);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (count == want) {
            /* idx is unique per tree: more rows than indexes cannot be, unless the primary key
             * itself is broken. Report it as a row whose stored hash is wrong. */
            if (first < 0) {
                first = count;
            }
            break;
        }
        const void *leaf = sqlite3_column_blob(stmt, 1);
        int leaf_len = sqlite3_column_bytes(stmt, 1);
        unsigned char *digest = out + count * HASH;
        SHA256_CTX ctx;
        SHA256_Init(&ctx);
        SHA256_Update(&ctx, "\x00", 1);
        if (leaf_len > 0) {
            SHA256_Update(&ctx, leaf, (size_t)leaf_len);
        }
        SHA256_Final(digest, &ctx);
        if (first < 0) {
            const void *stored = sqlite3_column_blob(stmt, 0);
            if (sqlite3_column_bytes(stmt, 0) != HASH || memcmp(stored, digest, HASH) != 0) {
                first = count;
            }
        }
        count++;
    }
    sqlite3_reset(stmt);
    Py_END_ALLOW_THREADS
    self->busy = 0;

    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        Py_DECREF(computed);
        return sqlite_error(self->db, "reading entries");
    }
    if (count < want && _PyBytes_Resize(&computed, count * HASH) < 0) {
        return NULL;
    }
    return Py_BuildValue("(nNn)", count, computed, first);
}

static PyObject *
reader_close(Reader *self, PyObject *Py_UNUSED(ignored))
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "the reader is in use by another thread");
        return NULL;
    }
    reader_close_handles(self);
    Py_RETURN_NONE;
}

static void
reader_dealloc(Reader *self)
{
    reader_close_handles(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef reader_methods[] = {
    {"check", (PyCFunction)reader_check, METH_VARARGS, check_doc},
    {"close", (PyCFunction)reader_close, METH_NOARGS, "Close the connection and its snapshot."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "services.audit._replay.LeafReader",
    .tp_doc = PyDoc_STR("LeafReader(path)\n--\n\n"
                        "A read-only connection to the SQLite database at path, holding one "
                        "snapshot until close()."),
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)reader_init,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_methods = reader_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "services.audit._replay",
    .m_doc = "fsck's leaf replay on SQLite, in C (see fsck.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__replay(void)
{
    if (PyType_Ready(&ReaderType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "LeafReader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
