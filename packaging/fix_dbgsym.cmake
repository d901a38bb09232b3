# CPack post-build script (CPACK_POST_BUILD_SCRIPTS): makes the -dbgsym
# packages CPack 3.25 writes pass lintian. Its md5sums name the files by
# their absolute path in CPack's staging dir (lintian:
# md5sums-lists-nonexistent-file; debsums cannot check them), and they have
# no /usr/share/doc entry. Each .ddeb is rebuilt with md5sums relative to
# the root and, as dh_strip does for dbgsym packages, a
# /usr/share/doc/PACKAGE-dbgsym symlink to its package's doc dir (which
# holds copyright and changelog; the .ddeb depends on it at = version).
foreach(f IN LISTS CPACK_PACKAGE_FILES)
  if(NOT f MATCHES "\\.ddeb$")
    continue()
  endif()
  set(work "${f}.unpacked")
  file(REMOVE_RECURSE "${work}")
  execute_process(COMMAND dpkg-deb -R "${f}" "${work}" RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "fix_dbgsym: dpkg-deb -R ${f} failed")
  endif()
  file(READ "${work}/DEBIAN/md5sums" sums)
  string(REGEX REPLACE "  /[^\n]*/_CPack_Packages/[^\n]*-dbgsym/" "  " sums "${sums}")
  file(WRITE "${work}/DEBIAN/md5sums" "${sums}")
  file(STRINGS "${work}/DEBIAN/control" pkg REGEX "^Package: ")
  string(REGEX REPLACE "^Package: " "" pkg "${pkg}")
  string(REGEX REPLACE "-dbgsym$" "" base "${pkg}")
  file(MAKE_DIRECTORY "${work}/usr/share/doc")
  file(CREATE_LINK "${base}" "${work}/usr/share/doc/${pkg}" SYMBOLIC)
  execute_process(COMMAND dpkg-deb --root-owner-group -b "${work}" "${f}"
    OUTPUT_QUIET RESULT_VARIABLE rc)
  if(rc)
    message(FATAL_ERROR "fix_dbgsym: dpkg-deb -b ${f} failed")
  endif()
  file(REMOVE_RECURSE "${work}")
endforeach()
