"""A minimal loader for the ELF x86-64 relocatable objects LLVM emits for graphc.

Why: a compiled graph found in the disk cache is a few object files.  Loading them
through MCJIT needs ``llvmlite.binding`` -- importing it and creating an engine cost
more than everything else a cache hit does (~20-60 ms in a fresh process).  The objects
graphc emits are simple: large code model (absolute 64-bit relocations), no TLS, no
constructors, calls to a handful of libc functions and to the kernel library.  So they
are laid out in one anonymous mapping, their symbols resolved and relocated here; the
code pages are then made read+execute, the constants read-only.

Only symbols graphc provides are resolved: the objects' own definitions, the caller's
table (the kernel library's registered drivers) and the C library functions listed in
:data:`C_FUNCTIONS`, looked up in libc/libm by name (never a process-wide ``dlsym``: a
symbol of some other loaded library is never bound by accident).  A global defined by
two objects is refused.  The unwind tables (``.eh_frame``) are loaded, relocated and
registered with the unwinder (``__register_frame``, as LLVM's own JIT does), so
debuggers, profilers and backtraces can walk through graphc's code.

Anything unexpected -- another machine type, a relocation type not listed in
:data:`RELOCATIONS`, an undefined symbol, a 32-bit field that does not fit -- raises
:class:`Unsupported` before any code can run, and the caller falls back to MCJIT.
"""
from __future__ import annotations

import ctypes
import mmap
import struct

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")

SHT_PROGBITS, SHT_SYMTAB, SHT_RELA, SHT_NOBITS = 1, 2, 4, 8
SHT_X86_64_UNWIND = 0x70000001      # the type LLVM gives .eh_frame on x86-64
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2
STB_LOCAL, STB_WEAK = 0, 2
EM_X86_64 = 62
PAGE = mmap.PAGESIZE

# x86-64 psABI relocation types the loader applies
R_X86_64_NONE, R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32 = 0, 1, 2, 4
R_X86_64_32, R_X86_64_32S, R_X86_64_PC64 = 10, 11, 24
#: relocation type -> (name, width in bytes, pc-relative)
RELOCATIONS = {R_X86_64_64: ("R_X86_64_64", 8, False),
               R_X86_64_PC32: ("R_X86_64_PC32", 4, True),
               R_X86_64_PLT32: ("R_X86_64_PLT32", 4, True),     # no PLT: a direct call
               R_X86_64_32: ("R_X86_64_32", 4, False),          # zero-extended
               R_X86_64_32S: ("R_X86_64_32S", 4, False),        # sign-extended
               R_X86_64_PC64: ("R_X86_64_PC64", 8, True)}
#: sections not needed to run the code or unwind it (notes, comments, debug info)
_SKIP_PREFIXES = (".note", ".comment", ".llvm_addrsig", ".debug")
EH_FRAME = ".eh_frame"

#: the C library functions graphc's generated code may call (libm for float64
#: transcendentals, memset/memcpy LLVM emits for loops, the runtime's futex/yield).  A
#: code generator that calls another one adds it here (tests/backends/llvm/test_elfload.py
#: checks every declaration in generated modules against this list).
C_FUNCTIONS = frozenset({
    "memcpy", "memmove", "memset", "sched_yield", "syscall", "usleep",
    "exp", "expf", "exp2", "exp2f", "expm1", "expm1f", "log", "logf", "log2", "log2f",
    "log10", "log10f", "log1p", "log1pf", "pow", "powf", "tanh", "tanhf", "erf", "erff",
    "erfc", "erfcf", "sin", "sinf", "cos", "cosf", "tan", "tanf", "atan", "atanf",
    "atan2", "atan2f", "sinh", "sinhf", "cosh", "coshf", "fmod", "fmodf", "cbrt", "cbrtf",
    "sqrt", "sqrtf", "floor", "floorf", "ceil", "ceilf", "round", "roundf", "trunc",
    "truncf", "fabs", "fabsf", "fmin", "fminf", "fmax", "fmaxf", "fma", "fmaf"})
_C_LIBRARIES = (("libc.so.6", "libc.so"), ("libm.so.6", "libm.so"))
_GCC_S = ("libgcc_s.so.1", "libgcc_s.so")


class Unsupported(Exception):
    """The object uses something this loader does not handle (use MCJIT instead)."""


class _Section:
    __slots__ = ("index", "name", "type", "flags", "offset", "size", "align", "link",
                 "info", "entsize", "addr")

    def __init__(self, index, name_off, typ, flags, _addr, offset, size, link, info,
                 align, entsize):
        self.index, self.type, self.flags = index, typ, flags
        self.offset, self.size, self.link, self.info = offset, size, link, info
        self.align, self.entsize = max(1, align), entsize
        self.name = name_off
        self.addr = None


class _Object:
    def __init__(self, data: bytes):
        if len(data) < _EHDR.size or data[:4] != b"\x7fELF":
            raise Unsupported("not an ELF object")
        ident, etype, machine, _v, _e, _ph, shoff, _f, _eh, _phs, _phn, shentsize, shnum, \
            shstrndx = _EHDR.unpack_from(data)
        if ident[4] != 2 or ident[5] != 1 or etype != 1 or machine != EM_X86_64:
            raise Unsupported("not a little-endian x86-64 relocatable object")
        if shentsize != _SHDR.size or shoff + shnum * shentsize > len(data):
            raise Unsupported("malformed section table")
        self.data = data
        self.sections = [_Section(i, *_SHDR.unpack_from(data, shoff + i * shentsize))
                         for i in range(shnum)]
        strtab = self.sections[shstrndx]
        for s in self.sections:
            s.name = self._str(strtab, s.name)
        self.symbols = []
        for s in self.sections:
            if s.type == SHT_SYMTAB:
                names = self.sections[s.link]
                for off in range(s.offset, s.offset + s.size, _SYM.size):
                    name, info, _other, shndx, value, _size = _SYM.unpack_from(data, off)
                    self.symbols.append((self._str(names, name), info >> 4, info & 15,
                                         shndx, value))

    def _str(self, sec, off) -> str:
        start = sec.offset + off
        end = self.data.index(b"\0", start)
        return self.data[start:end].decode()

    def loaded(self, s: _Section) -> bool:
        return (s.flags & SHF_ALLOC and s.type in _LOADED_TYPES and s.size
                and not s.name.startswith(_SKIP_PREFIXES))


_LOADED_TYPES = (SHT_PROGBITS, SHT_NOBITS, SHT_X86_64_UNWIND)


def _is_eh_frame(s: _Section) -> bool:
    return s.name == EH_FRAME


_HANDLES: dict = {}


def _library(names):
    """The first of ``names`` that loads (cached); None if none does."""
    for name in names:
        if name not in _HANDLES:
            try:
                _HANDLES[name] = ctypes.CDLL(name, use_errno=True)
            except OSError:
                _HANDLES[name] = None
        if _HANDLES[name] is not None:
            return _HANDLES[name]
    return None


def c_function(name: str) -> int | None:
    """Address of C library function ``name`` if it is one graphc's code may call
    (:data:`C_FUNCTIONS`), looked up in libc and libm only."""
    if name not in C_FUNCTIONS:
        return None
    for names in _C_LIBRARIES:
        lib = _library(names)
        if lib is not None:
            try:
                return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            except AttributeError:
                continue
    return None


def _libc():
    lib = _library(_C_LIBRARIES[0])
    if lib is None:
        raise Unsupported("no C library to call mprotect with")
    return lib


def _frame_registry():
    """(__register_frame, __deregister_frame) of the unwinder, or None."""
    lib = _library(_GCC_S)
    try:
        reg, dereg = lib.__register_frame, lib.__deregister_frame
    except AttributeError:
        return None
    reg.argtypes = dereg.argtypes = [ctypes.c_void_p]
    reg.restype = dereg.restype = None
    return reg, dereg


class LoadedCode:
    """Objects laid out, linked and protected in one mapping; keeps it alive."""

    def __init__(self, objects: list, resolve=None):
        objs = [_Object(bytes(o)) for o in objects]
        for o in objs:
            for s in o.sections:
                if s.flags & SHF_ALLOC and s.size and s.type not in _LOADED_TYPES \
                        and not s.name.startswith(_SKIP_PREFIXES):
                    raise Unsupported(f"section {s.name} of type {s.type}")
                if s.name.startswith((".init_array", ".fini_array", ".ctors", ".dtors",
                                      ".tdata", ".tbss")) and s.size:
                    raise Unsupported(f"section {s.name}")
        # layout: code, then read-only data, then writable data, each page-aligned
        groups = ([], [], [])
        for o in objs:
            for s in o.sections:
                if o.loaded(s):
                    g = 0 if s.flags & SHF_EXECINSTR else 2 if s.flags & SHF_WRITE else 1
                    groups[g].append((o, s))
        for o in objs:
            for name, bind, typ, shndx, value in o.symbols:
                if shndx == SHN_COMMON:
                    raise Unsupported(f"common symbol {name}")
        pos, bounds = 0, []
        placed = []
        for group in groups:
            start = pos
            for o, s in group:
                pos = -(-pos // s.align) * s.align
                placed.append((o, s, pos))
                # an unwind table ends with a zero terminator (the linker adds one to
                # executables; the unwinder walks the table up to it)
                pos += s.size + (4 if _is_eh_frame(s) else 0)
            bounds.append((start, pos))
            pos = -(-pos // PAGE) * PAGE
        size = max(pos, PAGE)
        self._map = mmap.mmap(-1, size, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self.base, self.size = base, size
        for o, s, off in placed:
            s.addr = base + off
            if s.type != SHT_NOBITS:
                self._map[off:off + s.size] = o.data[s.offset:s.offset + s.size]
        self.symbols = self._definitions(objs)
        for o in objs:
            addrs = []
            for name, bind, typ, shndx, value in o.symbols:
                if shndx == SHN_UNDEF:
                    if not name:
                        addrs.append(0)
                        continue
                    a = self.symbols.get(name) or (resolve(name) if resolve else None) \
                        or c_function(name)
                    if not a:
                        raise Unsupported(f"undefined symbol {name} (not graphc's, not in "
                                          "elfload.C_FUNCTIONS)")
                    addrs.append(a)
                else:
                    addrs.append(self._sym_addr(o, shndx, value, name))
            self._relocate(o, addrs, base)
        # protect: code read+execute, constants read-only
        mprotect = _libc().mprotect
        mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for (start, end), prot in zip(bounds, (mmap.PROT_READ | mmap.PROT_EXEC,
                                               mmap.PROT_READ,
                                               mmap.PROT_READ | mmap.PROT_WRITE)):
            n = -(-(end - start) // PAGE) * PAGE
            if n and mprotect(base + start, n, prot) != 0:
                raise OSError(ctypes.get_errno(), "mprotect failed")
        self._frames = [s.addr for _, s, _ in placed if _is_eh_frame(s)]
        self._registry = _frame_registry() if self._frames else None
        if self._registry is not None:
            for addr in self._frames:
                self._registry[0](addr)

    def __del__(self):
        registry = getattr(self, "_registry", None)
        if registry is not None:
            for addr in self._frames:
                registry[1](addr)
            self._registry = None

    def _definitions(self, objs) -> dict:
        """name -> address of every global the objects define; a name defined by two
        objects (other than weakly) is refused."""
        out: dict[str, int] = {}
        strong: set = set()
        for o in objs:
            for name, bind, typ, shndx, value in o.symbols:
                if bind == STB_LOCAL or shndx == SHN_UNDEF or not name:
                    continue
                addr = self._sym_addr(o, shndx, value, name)
                if addr is None:
                    continue
                if bind != STB_WEAK:
                    if name in strong:
                        raise Unsupported(f"symbol {name} defined by two objects")
                    strong.add(name)
                    out[name] = addr
                else:
                    out.setdefault(name, addr)
        return out

    def _sym_addr(self, o, shndx, value, name):
        """The symbol's address; None when its section is not loaded (only an error if
        a relocation of a loaded section uses it)."""
        if shndx == SHN_ABS:
            return value
        if shndx >= len(o.sections):
            raise Unsupported(f"symbol {name} in section {shndx}")
        s = o.sections[shndx]
        return None if s.addr is None else s.addr + value

    def _relocate(self, o, addrs, base) -> None:
        for rs in o.sections:
            if rs.type != SHT_RELA:
                continue
            target = o.sections[rs.info]
            if target.addr is None:
                continue            # relocations of a skipped section (unwind tables)
            if rs.entsize and rs.entsize != _RELA.size:
                raise Unsupported("malformed relocation table")
            for off in range(rs.offset, rs.offset + rs.size, _RELA.size):
                r_off, r_info, addend = _RELA.unpack_from(o.data, off)
                typ, sym = r_info & 0xFFFFFFFF, r_info >> 32
                if typ == R_X86_64_NONE:
                    continue
                if typ not in RELOCATIONS:
                    raise Unsupported(f"relocation type {typ} in {target.name}")
                _name, width, pcrel = RELOCATIONS[typ]
                if r_off + width > target.size or sym >= len(addrs) or addrs[sym] is None:
                    raise Unsupported(f"relocation of {target.name} to an unloaded symbol")
                place = target.addr + r_off
                val = addrs[sym] + addend - (place if pcrel else 0)
                at = place - base
                if width == 8:
                    self._map[at:at + 8] = struct.pack("<Q", val & 0xFFFFFFFFFFFFFFFF)
                elif typ == R_X86_64_32:              # zero-extended
                    if not 0 <= val < 1 << 32:
                        raise Unsupported("32-bit relocation out of range")
                    self._map[at:at + 4] = struct.pack("<I", val)
                else:                                 # PC32, PLT32, 32S: sign-extended
                    if not -(1 << 31) <= val < 1 << 31:
                        raise Unsupported("32-bit relocation out of range")
                    self._map[at:at + 4] = struct.pack("<i", val)

    def get_function_address(self, name: str) -> int:
        return self.symbols.get(name, 0)
