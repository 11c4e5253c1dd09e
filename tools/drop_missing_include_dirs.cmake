# CMAKE_PROJECT_INCLUDE for building unmodified ROS 2 interface packages
# (../shared/ros2-src) against the ROS 2 PyPI wheels: the wheels export
# targets whose include directories (/opt/python/...) exist only on the
# machine that built them, and CMake's generate step fails on them.  At the
# end of the top directory, drop the include entries that do not exist and
# are not generator expressions (CMakeLists.txt does the same for fer_ros).
function(ros2_src_drop_missing_include_dirs)
  get_property(targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(target ${targets})
    get_target_property(dirs ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT dirs)
      continue()
    endif()
    set(kept "")
    foreach(dir ${dirs})
      if(dir MATCHES "\\$<" OR EXISTS "${dir}")
        list(APPEND kept "${dir}")
      endif()
    endforeach()
    set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${kept}")
  endforeach()
endfunction()
if(CMAKE_CURRENT_SOURCE_DIR STREQUAL CMAKE_SOURCE_DIR)
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL ros2_src_drop_missing_include_dirs)
endif()
