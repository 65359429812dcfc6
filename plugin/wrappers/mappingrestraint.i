/* SWIG interface of the openmm-backmap plugin: MappingRestraintForce as a real openmm.Force.
 * Built into openmmbackmap._plugin.mappingrestraint; use it through openmmbackmap.restraints. */
%module(package="openmmbackmap._plugin") mappingrestraint

/* openmm first: it loads libOpenMM.so, which the extension module needs and does not locate itself. */
%pythonbegin %{
import openmm as _openmm_first  # noqa: F401
%}

%import(module="openmm") "swig/OpenMMSwigHeaders.i"
%include "swig/typemaps.i"
%include <std_string.i>

%{
#include "MappingRestraintForce.h"
#include "OpenMM.h"
#include "OpenMMAmoeba.h"
#include "OpenMMDrude.h"
#include "openmm/RPMDIntegrator.h"
#include "openmm/RPMDMonteCarloBarostat.h"
#include "openmm/serialization/XmlSerializer.h"
#include <cstring>
#include <sstream>
%}

%pythoncode %{
import numpy as _np
import openmm as _mm
from openmm import unit as _unit
%}

/* C++ exceptions become openmm.OpenMMException, as in OpenMM's own module. */
%{
static PyObject* backmapOpenMMException() {
    static PyObject* cls = NULL;
    if (cls == NULL) {
        PyObject* module = PyImport_ImportModule("openmm");
        if (module != NULL) {
            cls = PyObject_GetAttrString(module, "OpenMMException");
            Py_DECREF(module);
        }
        if (cls == NULL) {
            PyErr_Clear();
            cls = PyExc_Exception;
        }
    }
    return cls;
}
%}
%exception {
    try {
        $action
    } catch (std::exception& e) {
        PyErr_SetString(backmapOpenMMException(), e.what());
        SWIG_fail;
    }
}

/* Sequences (lists, tuples, numpy arrays) to std::vector; C-contiguous float64 buffers are copied
 * in one go, which keeps setTargets on 10^5 groups cheap. */
%fragment("Backmap_ToVectorDouble", "header") {
static int Backmap_ToVectorDouble(PyObject* obj, std::vector<double>& out) {
    out.clear();
    if (obj == Py_None)
        return 1;
    if (PyObject_CheckBuffer(obj)) {
        Py_buffer view;
        if (PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) == 0) {
            bool ok = (view.itemsize == sizeof(double) && view.format != NULL &&
                       (strcmp(view.format, "d") == 0 || strcmp(view.format, "<d") == 0 || strcmp(view.format, "=d") == 0));
            if (ok) {
                out.resize(view.len/sizeof(double));
                if (!out.empty())
                    memcpy(&out[0], view.buf, view.len);
            }
            PyBuffer_Release(&view);
            if (ok)
                return 1;
        }
        else
            PyErr_Clear();
    }
    PyObject* seq = PySequence_Fast(obj, "expected a sequence of numbers");
    if (seq == NULL)
        return 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    out.resize(n);
    PyObject** items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        out[i] = PyFloat_AsDouble(items[i]);
        if (out[i] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return 0;
        }
    }
    Py_DECREF(seq);
    return 1;
}
}
%fragment("Backmap_ToVectorInt", "header") {
static int Backmap_ToVectorInt(PyObject* obj, std::vector<int>& out) {
    out.clear();
    PyObject* seq = PySequence_Fast(obj, "expected a sequence of atom indices");
    if (seq == NULL)
        return 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    out.resize(n);
    PyObject** items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject* index = PyNumber_Index(items[i]);
        if (index == NULL) {
            Py_DECREF(seq);
            return 0;
        }
        long value = PyLong_AsLong(index);
        Py_DECREF(index);
        if (value == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return 0;
        }
        if (value < INT_MIN || value > INT_MAX) {
            PyErr_SetString(PyExc_OverflowError, "atom index does not fit in an int");
            Py_DECREF(seq);
            return 0;
        }
        out[i] = (int) value;
    }
    Py_DECREF(seq);
    return 1;
}
}
%typemap(in, fragment="Backmap_ToVectorDouble") const std::vector<double>& (std::vector<double> temp) {
    if (!Backmap_ToVectorDouble($input, temp))
        SWIG_fail;
    $1 = &temp;
}
%typemap(typecheck, precedence=SWIG_TYPECHECK_DOUBLE_ARRAY) const std::vector<double>& {
    $1 = ($input == Py_None || PySequence_Check($input) || PyObject_CheckBuffer($input)) ? 1 : 0;
}
%typemap(in, fragment="Backmap_ToVectorInt") const std::vector<int>& (std::vector<int> temp) {
    if (!Backmap_ToVectorInt($input, temp))
        SWIG_fail;
    $1 = &temp;
}
%typemap(typecheck, precedence=SWIG_TYPECHECK_INT32_ARRAY) const std::vector<int>& {
    $1 = PySequence_Check($input) ? 1 : 0;
}
/* The flat targets come back as raw bytes; the Python getTargets() views them as an (n, 3) array. */
%typemap(out) std::vector<double> BackmapPlugin::MappingRestraintForce::getTargets {
    $result = PyBytes_FromStringAndSize((const char*) $1.data(), $1.size()*sizeof(double));
}

/* typemaps.i spells OpenMM's vector type Vec3; the header spells it OpenMM::Vec3. */
%apply Vec3 { OpenMM::Vec3 };
%apply const Vec3& { const OpenMM::Vec3& };

#define OPENMM_EXPORT_BACKMAP
%feature("compactdefaultargs");
%feature("kwargs") BackmapPlugin::MappingRestraintForce::addGroup;
%feature("kwargs") BackmapPlugin::MappingRestraintForce::setGroupParameters;

%ignore BackmapPlugin::MappingRestraintForce::GroupInfo;
%ignore BackmapPlugin::MappingRestraintForce::getFlattenedGroups;
%ignore BackmapPlugin::MappingRestraintForce::checkGroup;
%ignore BackmapPlugin::MappingRestraintForce::getGroupParameters(int, std::vector<int>&, std::vector<double>&, double&, double&) const;
%rename(_setTargets) BackmapPlugin::MappingRestraintForce::setTargets;
%rename(_getTargets) BackmapPlugin::MappingRestraintForce::getTargets;

%include "MappingRestraintForce.h"

%newobject BackmapPlugin::MappingRestraintForce::_fromXml;

%extend BackmapPlugin::MappingRestraintForce {
    /* (atoms, weights, k, r0) of one group; weights is empty when equal weights were asked for. */
    PyObject* getGroupParameters(int index) const {
        std::vector<int> atoms;
        std::vector<double> weights;
        double k, r0;
        self->getGroupParameters(index, atoms, weights, k, r0);
        PyObject* pyAtoms = PyList_New(atoms.size());
        for (size_t i = 0; i < atoms.size(); i++)
            PyList_SET_ITEM(pyAtoms, i, PyLong_FromLong(atoms[i]));
        PyObject* pyWeights = PyList_New(weights.size());
        for (size_t i = 0; i < weights.size(); i++)
            PyList_SET_ITEM(pyWeights, i, PyFloat_FromDouble(weights[i]));
        return Py_BuildValue("(NNdd)", pyAtoms, pyWeights, k, r0);
    }

    /* A MappingRestraintForce view of a Force that is one (e.g. from System.getForce); not owning. */
    static BackmapPlugin::MappingRestraintForce& cast(OpenMM::Force& force) {
        BackmapPlugin::MappingRestraintForce* result = dynamic_cast<BackmapPlugin::MappingRestraintForce*>(&force);
        if (result == NULL)
            throw OpenMM::OpenMMException("MappingRestraintForce.cast: the Force is not a MappingRestraintForce");
        return *result;
    }

    static bool isinstance(OpenMM::Force& force) {
        return (dynamic_cast<BackmapPlugin::MappingRestraintForce*>(&force) != NULL);
    }

    static BackmapPlugin::MappingRestraintForce* _fromXml(const std::string& xml) {
        std::istringstream in(xml);
        OpenMM::Force* force = OpenMM::XmlSerializer::deserialize<OpenMM::Force>(in);
        BackmapPlugin::MappingRestraintForce* result = dynamic_cast<BackmapPlugin::MappingRestraintForce*>(force);
        if (result == NULL) {
            delete force;
            throw OpenMM::OpenMMException("MappingRestraintForce: the XML does not describe a MappingRestraintForce");
        }
        return result;
    }

    %pythoncode %{
    def setTargets(self, targets):
        """Set the targets of all groups: an (n_groups, 3) array in nm (or a Quantity), or 3*n_groups values.

        Raises openmm.OpenMMException when the shape does not fit the number of groups or a value is
        not finite. Call updateParametersInContext(context) to move the targets in a Context.
        """
        self._setTargets(_flat_targets(targets, self.getNumGroups()))

    def getTargets(self):
        """The targets of all groups, a numpy array of shape (n_groups, 3) in nm."""
        return _np.frombuffer(self._getTargets(), dtype=_np.float64).reshape(-1, 3).copy()

    def __getstate__(self):
        return _mm.XmlSerializer.serialize(self)

    def __setstate__(self, state):
        other = MappingRestraintForce._fromXml(state)
        self.this = other.this

    def __copy__(self):
        return MappingRestraintForce._fromXml(_mm.XmlSerializer.serialize(self))

    def __deepcopy__(self, memo):
        return self.__copy__()
    %}
}

%pythoncode %{
def _flat_targets(targets, num_groups):
    """Targets as a contiguous float64 vector of 3*num_groups values; OpenMMException if the shape is wrong."""
    if _unit.is_quantity(targets):
        targets = targets.value_in_unit(_unit.nanometer)
    array = _np.asarray(targets, dtype=_np.float64)
    if not (array.shape == (num_groups, 3) or array.shape == (3 * num_groups,)):
        raise _mm.OpenMMException(
            f"MappingRestraintForce.setTargets: expected targets of shape ({num_groups}, 3) (one x, y, z in nm per group) "
            f"or {3 * num_groups} values, got shape {array.shape}"
        )
    return _np.ascontiguousarray(array.reshape(-1))
%}
