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

An object whose own tables lie -- a section, string, symbol or relocation outside the
file or its section, an index past the section table, an absurd alignment or size, an
unwind record running past its table, another machine's object read from disk -- raises :class:`Malformed` (a subclass): a disk-cache entry like that is a miss, never
handed to MCJIT and never a segfault.  :func:`validate` checks objects without loading.
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
EM_X86_64, EM_AARCH64 = 62, 183
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


class Malformed(Unsupported):
    """The object is not well formed (its tables point outside it): do not run it."""


#: no graphc object comes near this; a bigger layout is a corrupt size field
_MAX_IMAGE = 1 << 30


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
    def __init__(self, data: bytes, machine: int = EM_X86_64):
        if len(data) < _EHDR.size or data[:4] != b"\x7fELF":
            raise Malformed("not an ELF object")
        want = machine
        ident, etype, machine, _v, _e, _ph, shoff, _f, _eh, _phs, _phn, shentsize, shnum, \
            shstrndx = _EHDR.unpack_from(data)
        if ident[4] != 2 or ident[5] != 1 or etype != 1:
            raise Malformed("not a little-endian 64-bit relocatable object")
        if machine != want:
            raise Unsupported(f"an object for ELF machine {machine}, not {want}")
        if shentsize != _SHDR.size or shnum == 0 or shoff + shnum * shentsize > len(data):
            raise Malformed("malformed section table")
        if shstrndx >= shnum:
            raise Malformed(f"section-name table index {shstrndx} of {shnum} sections")
        self.data = data
        self.sections = [_Section(i, *_SHDR.unpack_from(data, shoff + i * shentsize))
                         for i in range(shnum)]
        for s in self.sections:
            if s.type != SHT_NOBITS and s.offset + s.size > len(data):
                raise Malformed(f"section {s.index} lies outside the object")
            if s.align & (s.align - 1) or s.size > _MAX_IMAGE:
                raise Malformed(f"section {s.index}: alignment {s.align}, size {s.size}")
            if s.type in (SHT_SYMTAB, SHT_RELA) and s.link >= shnum:
                raise Malformed(f"section {s.index} links to section {s.link}")
            if s.type == SHT_RELA and s.info >= shnum:
                raise Malformed(f"relocations of section {s.info} of {shnum}")
        strtab = self.sections[shstrndx]
        for s in self.sections:
            s.name = self._str(strtab, s.name)
        if sum(s.type == SHT_SYMTAB for s in self.sections) > 1:
            raise Malformed("more than one symbol table")
        for s in self.sections:
            if _is_eh_frame(s) and s.type != SHT_NOBITS:
                self._check_unwind_table(s)
        self.symbols = []
        for s in self.sections:
            if s.type == SHT_SYMTAB:
                if (s.entsize and s.entsize != _SYM.size) or s.size % _SYM.size:
                    raise Malformed("malformed symbol table")
                names = self.sections[s.link]
                for off in range(s.offset, s.offset + s.size, _SYM.size):
                    name, info, _other, shndx, value, _size = _SYM.unpack_from(data, off)
                    if shndx not in (SHN_UNDEF, SHN_ABS, SHN_COMMON) and shndx < 0xFF00:
                        if shndx >= shnum or value > self.sections[shndx].size:
                            raise Malformed(f"symbol at {off} outside its section")
                    self.symbols.append((self._str(names, name), info >> 4, info & 15,
                                         shndx, value))
            elif s.type == SHT_RELA:
                if (s.entsize and s.entsize != _RELA.size) or s.size % _RELA.size:
                    raise Malformed("malformed relocation table")

    def _check_unwind_table(self, s: _Section) -> None:
        """The records of an ``.eh_frame`` stay inside it and every FDE names a CIE
        before it (the unwinder walks the table by these lengths and pointers)."""
        pos, cies, data = 0, set(), self.data
        while pos + 4 <= s.size:
            (length,) = struct.unpack_from("<I", data, s.offset + pos)
            if length == 0:
                return                                  # a terminator
            head = 4
            if length == 0xFFFFFFFF:
                if pos + 12 > s.size:
                    break
                (length,) = struct.unpack_from("<Q", data, s.offset + pos + 4)
                head = 12
            end = pos + head + length
            if length < 4 or end > s.size:
                break
            (cie_id,) = struct.unpack_from("<I", data, s.offset + pos + head)
            if cie_id == 0:
                cies.add(pos)
            elif pos + head - cie_id not in cies:
                raise Malformed(f"unwind record at {pos} names no CIE")
            pos = end
        if pos != s.size:
            raise Malformed(f"unwind table record at {pos} runs past its {s.size} bytes")

    def _str(self, sec, off) -> str:
        if off and (sec.type == SHT_NOBITS or off >= sec.size):
            raise Malformed(f"string {off} outside its table")
        start = sec.offset + off
        end = self.data.find(b"\0", start, sec.offset + sec.size)
        if end < 0:
            if off == 0:
                return ""
            raise Malformed(f"string {off} is not terminated inside its table")
        try:
            return self.data[start:end].decode()
        except UnicodeDecodeError:
            raise Malformed(f"string {off} is not text") from None

    def loaded(self, s: _Section) -> bool:
        return (s.flags & SHF_ALLOC and s.type in _LOADED_TYPES and s.size
                and not s.name.startswith(_SKIP_PREFIXES))


_LOADED_TYPES = (SHT_PROGBITS, SHT_NOBITS, SHT_X86_64_UNWIND)


def validate(objects: list, resolve=None) -> None:
    """Raise :class:`Malformed` unless every object is a relocatable object for this
    machine whose tables are all within bounds (what :class:`LoadedCode` checks, and
    the relocations of sections it would skip, without mapping anything) and every
    symbol it uses is defined by the objects, by ``resolve`` (the kernel library's
    registered drivers), by the C library or by this process: what must hold before
    MCJIT is handed objects read from disk (MCJIT binds an unknown symbol to address 0,
    and a call there is a segfault)."""
    try:
        objs = [_validate_one(bytes(data)) for data in objects]
    except Malformed:
        raise
    except Unsupported as e:                        # another machine's object: foreign
        raise Malformed(str(e)) from None
    except (struct.error, IndexError, ValueError, OverflowError) as e:
        raise Malformed(f"malformed object ({type(e).__name__}: {e})") from None
    defined = {name for o in objs for name, bind, _t, shndx, _v in o.symbols
               if bind != STB_LOCAL and shndx != SHN_UNDEF and name}
    for o in objs:
        for name, _bind, _t, shndx, _v in o.symbols:
            if shndx == SHN_UNDEF and name and name not in defined and not (
                    (resolve and resolve(name)) or c_function(name) or _in_process(name)):
                raise Malformed(f"undefined symbol {name}")


def _in_process(name: str) -> bool:
    """Whether MCJIT would find ``name`` among the process's symbols."""
    try:
        return bool(getattr(ctypes.CDLL(None), name, None))
    except (OSError, AttributeError, ValueError):
        return False


def _host_machine() -> int | None:
    import platform
    return {"x86_64": EM_X86_64, "amd64": EM_X86_64, "aarch64": EM_AARCH64,
            "arm64": EM_AARCH64}.get(platform.machine().lower())


def _validate_one(data: bytes) -> "_Object":
    machine = _host_machine()
    if machine is None and len(data) >= _EHDR.size:
        machine = _EHDR.unpack_from(data)[2]        # an unknown host: no machine check
    o = _Object(data, machine or EM_X86_64)
    nsym = len(o.symbols)
    for rs in o.sections:
        if rs.type != SHT_RELA:
            continue
        target = o.sections[rs.info]
        for off in range(rs.offset, rs.offset + rs.size, _RELA.size):
            r_off, r_info, _ = _RELA.unpack_from(o.data, off)
            typ, sym = r_info & 0xFFFFFFFF, r_info >> 32
            width = RELOCATIONS.get(typ, ("", 8, False))[1] if machine == EM_X86_64 else 1
            if typ != R_X86_64_NONE and (r_off + width > target.size or sym >= nsym):
                raise Malformed(f"relocation at {off} outside {target.name}")
    return o


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
        try:
            self._load(objects, resolve)
        except (struct.error, IndexError, ValueError, OverflowError) as e:
            raise Malformed(f"malformed object ({type(e).__name__}: {e})") from None

    def _load(self, objects, resolve):
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
        for group in groups:
            for o, s in group:
                if s.align > PAGE:
                    raise Unsupported(f"section {s.name} aligned to {s.align} bytes")
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
        if size > _MAX_IMAGE:
            raise Malformed(f"a {size}-byte image")
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
                if r_off + width > target.size or sym >= len(addrs):
                    raise Malformed(f"relocation at {off} outside {target.name}")
                if addrs[sym] is None:
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
